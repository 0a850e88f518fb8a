#!/bin/bash
# node-ctl.sh - one compute node of the multi-node test cluster (SLURM_NODES=3 tests/infra/start-slurm.sh).
#   node-ctl.sh lose NODE     kill -9 every process in NODE's namespaces (slurmd, slurmstepd, the tasks):
#                             its mount namespace goes with them, so its /tmp and scratch tmpfs are wiped
#   node-ctl.sh return NODE   start NODE again (fresh namespaces, empty scratch) and wait until Slurm uses it
#   node-ctl.sh start NODE    start NODE's slurmd if it is not running (used by start-slurm.sh)
#   node-ctl.sh exec NODE CMD...   run CMD inside NODE (its network, hostname, /tmp and scratch)
#   node-ctl.sh status        each node: pid of its slurmd (the namespace holder) and Slurm's state
# SLURM_PREFIX as for start-slurm.sh (default /var/tmp/dwf-slurm-nodes); settings come from $SLURM_PREFIX/nodes.env.
set -euo pipefail
P=${SLURM_PREFIX:-/var/tmp/dwf-slurm-nodes}
[ -s "$P/nodes.env" ] || { echo "no multi-node cluster under $P (no nodes.env)" >&2; exit 2; }
# shellcheck disable=SC1091
. "$P/nodes.env"
export SLURM_CONF
V=$P/var; ND=$P/nodes
# shellcheck source-path=SCRIPTDIR source=slurm-lib.sh
. "$(dirname "$0")/slurm-lib.sh"   # alive
usage() { sed -n '2,9p' "$0" >&2; exit 2; }
known() { case " $NODES " in *" $1 "*) ;; *) echo "unknown node '$1' (nodes: $NODES)" >&2; exit 2;; esac; }

start() {
  local n=$1
  alive $ND/$n.pid && return 0
  ip netns list | grep -qw "^$n" || { echo "network namespace $n is missing: run start-slurm.sh" >&2; exit 1; }
  # nsenter --net (not `ip netns exec`, which remounts /sys and so hides /sys/fs/cgroup, which slurmd needs);
  # unshare without --fork: the shell below becomes slurmd (exec), which holds the UTS + mount namespaces.
  # Propagation slave: host mounts still reach the node, the node's tmpfs mounts never reach the host.
  setsid nsenter --net=/var/run/netns/$n unshare --uts --mount --propagation slave -- \
    /bin/sh -c '
      set -e
      n=$1; scratch=$2; size=$3; pidfile=$4
      hostname "$n"
      mount -t tmpfs -o mode=1777 "tmp-$n" /tmp
      mount -t tmpfs -o "size=$size,mode=1777" "scratch-$n" "$scratch"
      echo $$ > "$pidfile.new"; mv "$pidfile.new" "$pidfile"
      cd /  # the caller may sit under /tmp, which is the node'"'"'s own empty tmpfs now
      exec slurmd -D -N "$n"
    ' _ "$n" "$SCRATCH_DIR" "$SCRATCH_SIZE" "$ND/$n.pid" </dev/null >>"$V/log/slurmd-$n.out" 2>&1 &
  for i in $(seq 50); do alive $ND/$n.pid && return 0; sleep 0.1; done
  echo "slurmd on $n did not start; see $V/log/slurmd-$n.out" >&2; exit 1
}

lose() {
  local n=$1 pids i
  for i in $(seq 50); do
    pids=$(ip netns pids "$n" 2>/dev/null || true)
    [ -s $ND/$n.pid ] && pids="$pids $(cat $ND/$n.pid)"
    # alive and not a zombie (this machine's init reaps the re-parented slurmd late)
    pids=$(for p in $pids; do case $(ps -o stat= -p "$p" 2>/dev/null) in ""|Z*) ;; *) echo "$p";; esac; done)
    [ -z "$pids" ] && break
    kill -9 $pids 2>/dev/null || true
    sleep 0.1
  done
  [ -z "$pids" ] || { echo "could not kill every process of $n: $pids" >&2; exit 1; }
  rm -f $ND/$n.pid
  echo "$n lost (processes killed, /tmp and $SCRATCH_DIR gone with its mount namespace)"
}

state() { sinfo -h -N -n "$1" -o %T 2>/dev/null | head -1; }

cmd=${1:-}; [ -n "$cmd" ] || usage; shift
case $cmd in
  start)  known "${1:-}"; start "$1" ;;
  lose)   known "${1:-}"; lose "$1" ;;
  return)
    known "${1:-}"; n=$1; start "$n"
    # ReturnToService=2: the node is usable again as soon as its slurmd registers
    for i in $(seq 300); do
      case $(state "$n") in idle|mixed|allocated|completing) break;; esac; sleep 0.2
    done
    case $(state "$n") in down*|drain*) scontrol update nodename="$n" state=resume;; esac
    echo "$n returned: $(state "$n")" ;;
  exec)
    known "${1:-}"; n=$1; shift; [ $# -gt 0 ] || usage
    alive $ND/$n.pid || { echo "$n is not running" >&2; exit 1; }
    # nsenter --mount would start in the node's / : keep this folder unless it is under the private /tmp
    case $PWD in /tmp|/tmp/*) wd=/ ;; *) wd=$PWD ;; esac
    exec nsenter -t "$(cat $ND/$n.pid)" --net --uts --mount --wd="$wd" -- "$@" ;;
  status)
    for n in $NODES; do
      if alive $ND/$n.pid; then p=$(cat $ND/$n.pid); else p=-; fi
      echo "$n pid=$p slurm=$(state "$n")"
    done ;;
  *) usage ;;
esac
