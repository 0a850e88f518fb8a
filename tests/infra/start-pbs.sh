#!/bin/bash
# start-pbs.sh - a real OpenPBS on this host, as root: pbs_server + pbs_sched + pbs_comm + pbs_mom and the
# server's PostgreSQL datastore. Adapted from the project's reference (../shared/tools/pbs/start-pbs.sh);
# used by tests/test_pbs.py and .ci/setup. Debian 12 has no PBS server package, so it is built from source:
#
#   build  once per machine: the source tarball's sha256 names the installed prefix,
#          $PBS_CACHE/<sha256>/prefix (default /var/cache/dwfhpc-pbs). A later run with the same tarball
#          finds it there and skips the build (3.5-8 min on one core) - it only starts the daemons.
#   start  (default: build if needed, then start) server, scheduler, comm and mom on this host, with
#          acl_roots=root + flatuid (root may submit), job_history_enable (qstat -x shows finished jobs),
#          the node advertising PBS_NCPUS CPUs. Runtime state (pbs.conf, PBS_HOME, the datastore, TMPDIRs of
#          jobs) lives under PBS_PREFIX (default /tmp/dwf-pbs). Re-running it while PBS runs changes nothing.
#   deps   only the Debian build packages that are missing (apt-get); build and start call it.
#   env    print the client environment.
# Stop with stop-pbs.sh (stops every daemon this started, removes the /etc/hosts line it added).
#
# Env: PBS_SRC     OpenPBS source tarball (default: <repo>/../shared/tools/pbs/openpbs-src.tar.gz)
#      PBS_CACHE   where built prefixes are kept (default /var/cache/dwfhpc-pbs)
#      PBS_PREFIX  runtime state (default /tmp/dwf-pbs)
#      PBS_NCPUS   CPUs the node advertises (default 4: test tasks are light, as for Slurm)
#      JOBS        make -j (default 1)
# Exit 3 with "cannot build PBS: ..." when the source tarball is not there (tests then skip, or fail in CI).
# Clients afterwards: eval "$(start-pbs.sh env)"  (PBS_CONF_FILE and PATH)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SRC=${PBS_SRC:-$REPO/../shared/tools/pbs/openpbs-src.tar.gz}
CACHE=${PBS_CACHE:-/var/cache/dwfhpc-pbs}
P=${PBS_PREFIX:-/tmp/dwf-pbs}
NCPUS=${PBS_NCPUS:-4}
JOBS=${JOBS:-1}
CONF=$P/etc/pbs.conf
PBSHOME=$P/pbs_home
HOST=$(hostname)
HOSTS_TAG="# added by dwfhpc start-pbs.sh"
DEPS="gcc g++ make autoconf automake libtool pkg-config perl swig python3-dev tcl-dev tk-dev libhwloc-dev
      libedit-dev libical-dev libncurses-dev libexpat1-dev libssl-dev libcjson-dev zlib1g-dev libx11-dev
      libxt-dev libxext-dev libxft-dev postgresql libpq-dev"

log() { echo "[start-pbs $(date +%T)] $*" >&2; }
die() { echo "start-pbs: $1" >&2; exit "${2:-1}"; }

[ "$(id -u)" = 0 ] || die "needs root (the daemons, the datastore as user postgres, /etc/hosts)"
if [ ! -f "$SRC" ]; then
    die "cannot build PBS: the OpenPBS source tarball $SRC is not there (../shared/tools/pbs beside the checkout, or set PBS_SRC)" 3
fi
SHA=$(sha256sum "$SRC" | cut -c1-64)
PREFIX=$CACHE/$SHA/prefix
export PBS_CONF_FILE=$CONF
export PATH=$PREFIX/bin:$PREFIX/sbin:/usr/lib/postgresql/15/bin:$PATH

deps() {
    local miss
    miss=$(for p in $DEPS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
    [ -z "$miss" ] && return 0
    log "installing build packages:" $miss
    apt-get update -qq
    # (the Debian postgresql package's own cluster on 5432 is not used: PBS runs its own on 15007)
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
        $miss >/dev/null
}

build() {
    [ -f "$CACHE/$SHA/.built" ] && return 0
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9                                   # one build at a time on this machine
    if [ -f "$CACHE/$SHA/.built" ]; then exec 9>&-; return 0; fi
    deps
    local b=$CACHE/$SHA.build t0=$SECONDS
    log "building OpenPBS $SHA (once per machine; ~4-8 min) into $PREFIX"
    rm -rf "$b" "$CACHE/$SHA"
    mkdir -p "$b/src" "$b/build"
    tar -xzf "$SRC" -C "$b/src" --strip-components=1
    (
        cd "$b/src" && nice -n 19 ./autogen.sh
        cd "$b/build"
        # --with-python=/usr: Debian's python3 (else a pyenv python3 on PATH is embedded)
        # --disable-security: chk_file_sec refuses a PBS_HOME below the world-writable /tmp
        nice -n 19 ../src/configure --prefix="$PREFIX" --with-pbs-server-home="$PBSHOME" \
            --with-pbs-conf-file="$CONF" --with-python=/usr --disable-security
        nice -n 19 make -j"$JOBS"
        # keep "make install" inside the prefix (it would write /etc/profile.d and /lib/systemd/system)
        nice -n 19 make install sysprofiledir="$PREFIX/etc/profile.d" unitfiledir="$PREFIX/lib/systemd"
    ) > "$b.log" 2>&1 || { tail -30 "$b.log" >&2; die "OpenPBS build failed (log: $b.log)"; }
    # pbs_db_utility runs createdb as soon as "pg_ctl status" sees a postmaster, which races with
    # PostgreSQL's start-up ("the database system is starting up"): wait until it accepts connections.
    sed -i '/createdb -p ${port} pbs_datastore/i\
	for _w in $(seq 30); do ${bin_dir}/pg_isready -q -p ${port} \&\& break; sleep 1; done' \
        "$PREFIX/libexec/pbs_db_utility"
    chmod 4755 "$PREFIX/sbin/pbs_iff" "$PREFIX/sbin/pbs_rcp"   # as the RPM does (non-root users)
    rm -rf "$b"
    mv "$b.log" "$CACHE/$SHA/build.log"
    echo "$SRC" > "$CACHE/$SHA/.built"
    log "built in $((SECONDS - t0)) s"
    exec 9>&-
}

ensure_hostname() {
    # PBS (TPP and the server) ignores 127.0.0.0/8: the host name must resolve to a non-loopback IPv4 address.
    if getent ahostsv4 "$HOST" | awk '{print $1}' | grep -qv '^127\.'; then return 0; fi
    local ip
    ip=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+\.' | grep -v '^127\.' | head -1 || true)
    [ -n "$ip" ] || die "no non-loopback IPv4 address for $HOST (PBS needs one; e.g. ip addr add 10.254.0.1/32 dev lo)"
    log "adding '$ip $HOST' to /etc/hosts"
    echo "$ip $HOST  $HOSTS_TAG" >> /etc/hosts
}

running() { qstat -B >/dev/null 2>&1 && pbsnodes "$HOST" 2>/dev/null | grep -Eq 'state = (free|job-busy)'; }

start() {
    build
    ensure_hostname
    if running; then log "PBS already running"; return 0; fi
    mkdir -p "$P/etc" "$P/tmp" "$P/jobdirs"
    chmod 755 "$P" "$P/etc"
    chmod 1777 "$P/tmp" "$P/jobdirs"
    cat > "$CONF.new" <<EOF
PBS_EXEC=$PREFIX
PBS_HOME=$PBSHOME
PBS_SERVER=$HOST
PBS_START_SERVER=1
PBS_START_SCHED=1
PBS_START_COMM=1
PBS_START_MOM=1
PBS_CORE_LIMIT=unlimited
PBS_SCP=/usr/bin/scp
PBS_TMPDIR=$P/tmp
EOF
    # a PBS_HOME made by another build (the prefix moved on): start afresh
    if [ -f "$CONF" ] && ! cmp -s "$CONF.new" "$CONF"; then rm -rf "$PBSHOME"; fi
    mv "$CONF.new" "$CONF"
    local t0=$SECONDS
    # The first start runs pbs_habitat: PBS_HOME, initdb of the datastore (as user postgres), queue workq,
    # node $HOST. "ulimit ... Operation not permitted" and "OOM killer" warnings are harmless.
    "$PREFIX/libexec/pbs_init.d" start >"$P/init.log" 2>&1 || { cat "$P/init.log" >&2; die "pbs_init.d start failed"; }
    for _ in $(seq 60); do qstat -B >/dev/null 2>&1 && break; sleep 1; done
    qstat -B >/dev/null || { cat "$P/init.log" >&2; die "pbs_server does not answer qstat -B"; }
    qmgr -c "set server acl_roots = root"           # allow jobs owned by root
    qmgr -c "set server flatuid = true"             # client connects as root@localhost, server is $HOST
    qmgr -c "set server job_history_enable = true"  # qstat -x shows finished jobs (the collector's "lost")
    qmgr -c "set server scheduler_iteration = 5"    # a cycle every 5 s besides the submit/exit events
    pbsnodes "$HOST" >/dev/null 2>&1 || qmgr -c "create node $HOST"
    qmgr -c "set node $HOST resources_available.ncpus = $NCPUS"
    local cfg=$PBSHOME/mom_priv/config changed=0
    # job dirs for qsub -W sandbox=PRIVATE; output files copied with cp on this one host, never scp
    grep -q '^\$jobdir_root' "$cfg" || { echo "\$jobdir_root $P/jobdirs" >> "$cfg"; changed=1; }
    grep -q '^\$usecp' "$cfg" || { echo '$usecp *:/ /' >> "$cfg"; changed=1; }
    [ $changed = 1 ] && kill -HUP "$(cat "$PBSHOME/mom_priv/mom.lock")"
    for _ in $(seq 60); do running && break; sleep 1; done
    running || { pbsnodes "$HOST" >&2 || true; die "the node $HOST did not become free"; }
    log "started in $((SECONDS - t0)) s"
}

env_lines() { echo "export PBS_CONF_FILE=$CONF PATH=$PREFIX/bin:$PREFIX/sbin:\$PATH"; }

case "${1:-start}" in
    deps) deps ;;
    build) build ;;
    start) start; env_lines; pbsnodes "$HOST" | grep -E '^\S|state =|resources_available.ncpus' >&2 ;;
    env) env_lines ;;
    *) echo "usage: $0 [start|build|deps|env]" >&2; exit 2 ;;
esac
