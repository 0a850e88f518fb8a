#!/bin/bash
# stop-pbs.sh - stop the OpenPBS started by start-pbs.sh: server (qterm, which also stops the datastore),
# scheduler, comm, mom, then whatever is left of them by their lock files only (never by name), and remove
# the /etc/hosts line start-pbs.sh added. The built prefix (PBS_CACHE) and PBS_HOME stay for the next start.
# Env: PBS_PREFIX (default /tmp/dwf-pbs), as for start-pbs.sh.
set -uo pipefail
P=${PBS_PREFIX:-/tmp/dwf-pbs}
CONF=$P/etc/pbs.conf
PBSHOME=$P/pbs_home
HOSTS_TAG="# added by dwfhpc start-pbs.sh"
[ -f "$CONF" ] && PREFIX=$(sed -n 's/^PBS_EXEC=//p' "$CONF") || PREFIX=""
export PBS_CONF_FILE=$CONF
[ -n "$PREFIX" ] && export PATH=$PREFIX/bin:$PREFIX/sbin:$PATH

# the pid in a lock file, if that process is alive and is what the file says (else a stale lock)
pid_of() {
    local p
    [ -f "$1" ] || return 1
    p=$(tr -d '\0 ' < "$1" 2>/dev/null | head -1) || return 1
    [ -n "$p" ] && grep -qa "$2" "/proc/$p/cmdline" 2>/dev/null && echo "$p"
}
wait_gone() { for _ in $(seq "${2:-40}"); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.5; done; return 1; }

if [ -n "$PREFIX" ] && p=$(pid_of "$PBSHOME/server_priv/server.lock" pbs_server); then
    qterm -t quick >/dev/null 2>&1 || true        # the server also stops the datastore and pbs_ds_monitor
    wait_gone "$p" 40 || kill "$p" 2>/dev/null
fi
for f in sched_priv/sched.lock:pbs_sched mom_priv/mom.lock:pbs_mom server_priv/comm.lock:pbs_comm \
         server_priv/server.lock:pbs_server; do
    p=$(pid_of "$PBSHOME/${f%%:*}" "${f##*:}") || continue
    kill "$p" 2>/dev/null
    wait_gone "$p" 40 || { kill -9 "$p" 2>/dev/null; wait_gone "$p" 10; }
done
# a daemon of ours whose lock file no longer names it (a mom stopped right after its start left one running):
# found by its executable, inside this private prefix only
if [ -n "$PREFIX" ]; then
    for d in /proc/[0-9]*; do
        exe=$(readlink "$d/exe" 2>/dev/null) || continue
        case "$exe" in
            "$PREFIX"/sbin/pbs_*|"$PREFIX"/bin/pbs_*)
                p=${d#/proc/}; kill "$p" 2>/dev/null; wait_gone "$p" 20 || kill -9 "$p" 2>/dev/null ;;
        esac
    done
fi
# the datastore, only if the server did not stop it (its postmaster.pid names it)
if p=$(head -1 "$PBSHOME/datastore/postmaster.pid" 2>/dev/null) && grep -qa postgres "/proc/$p/cmdline" 2>/dev/null; then
    kill "$p" 2>/dev/null; wait_gone "$p" 40
fi
if p=$(pid_of "$PBSHOME/datastore/pbs_ds_monitor.pid" pbs_ds_monitor 2>/dev/null); then kill "$p" 2>/dev/null; fi
# (rewritten in place, not renamed: /etc/hosts may be a bind mount)
if grep -q "$HOSTS_TAG\$" /etc/hosts; then
    kept=$(grep -v "$HOSTS_TAG\$" /etc/hosts)
    printf '%s\n' "$kept" > /etc/hosts
fi
echo "[stop-pbs $(date +%T)] stopped" >&2
