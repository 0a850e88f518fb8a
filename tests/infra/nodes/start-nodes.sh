#!/bin/bash
# start-nodes.sh - a private Slurm 22.05 "cluster" of SLURM_NODES (default 3) compute nodes on one machine,
# as root, no systemd. Run through `SLURM_NODES=3 tests/infra/start-slurm.sh` (which execs this).
#   host:  munged (private key+socket) -> slurmctld, listening on the bridge address 10.78.0.1
#   node dwfnK (K=1..N): own network namespace "dwfnK" (veth to bridge dwfnbr0, address 10.78.0.(10+K)),
#          own UTS namespace (hostname dwfnK) and own mount namespace: a private tmpfs /tmp and a tmpfs
#          node-local scratch at /scratch/local (SCRATCH_SIZE, default 200m); everything else (the work
#          tree, $SLURM_PREFIX, the shared folder) is the host's file system, as on a cluster's shared FS.
#          One slurmd -N dwfnK runs in it; its pid is in $P/nodes/dwfnK.pid (node-ctl.sh lose|return).
# Settings: SLURM_PREFIX (default /var/tmp/dwf-slurm-nodes; must not be under /tmp: the nodes' /tmp is
# private), SLURM_NODES, SLURM_CPUS (CPUs per node, default 2), CTLD_PORT/SLURMD_PORT (default 7847/7848),
# NODES_NET (default 10.78.0: the WAN emulator in tests/infra/wan uses 10.77.0.x), SCRATCH_SIZE,
# NODES_SHARED (a folder the tests share with the nodes, default /var/tmp/dwf-nodes-shared).
# Idempotent: re-running starts only what is missing; a changed slurm.conf restarts the daemons.
set -euo pipefail
H=$(cd "$(dirname "$0")" && pwd)
P=${SLURM_PREFIX:-/var/tmp/dwf-slurm-nodes}
N=${SLURM_NODES:-3}
case "$(realpath -m "$P")/" in /tmp/*) echo "SLURM_PREFIX=$P is under /tmp, which is private on each node" >&2; exit 2;; esac
MAX_ARRAY_SIZE=${MAX_ARRAY_SIZE:-100001}
CTLD_PORT=${CTLD_PORT:-7847} SLURMD_PORT=${SLURMD_PORT:-7848}
CLUSTER=${CLUSTER:-dwfnodes}
CPUS=${SLURM_CPUS:-2}
NET=${NODES_NET:-10.78.0}; BR=${NODES_BRIDGE:-dwfnbr0}
SCRATCH=${SCRATCH_DIR:-/scratch/local}; SCRATCH_SIZE=${SCRATCH_SIZE:-200m}
SHARED=${NODES_SHARED:-/var/tmp/dwf-nodes-shared}
MEM=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 1024 ))
V=$P/var; M=$V/munge; SOCK=$M/munge.socket; ND=$P/nodes
export SLURM_CONF=$P/slurm.conf
# shellcheck source-path=SCRIPTDIR source=../slurm-lib.sh
. "$H/../slurm-lib.sh"
NODES=$(seq -f 'dwfn%g' 1 "$N" | tr '\n' ' ')

# 1. packages (only what is missing)
install_missing munge slurmctld slurmd slurm-client iproute2 util-linux
mkdir -p "$P" $V/state $V/spool $V/log $V/run $M $ND "$SHARED" "$SCRATCH"
chmod 1777 "$SHARED"
# what node-ctl.sh and stop-slurm.sh need to know about this cluster
cat > $P/nodes.env <<ENV
SLURM_CONF=$SLURM_CONF
SLURM_NODES=$N
NODES="$NODES"
NODES_NET=$NET
NODES_BRIDGE=$BR
SCRATCH_DIR=$SCRATCH
SCRATCH_SIZE=$SCRATCH_SIZE
NODES_SHARED=$SHARED
ENV

# 2. munge with a private key and socket $SOCK; the socket path is on the shared FS, so every node reaches it
start_munge $M

# 3. network: bridge on the host, one namespace + veth per node
if ! ip link show $BR >/dev/null 2>&1; then
  ip link add $BR type bridge
  ip addr add $NET.1/24 dev $BR
fi
ip link set $BR up
k=0
for n in $NODES; do
  k=$((k + 1)); addr=$NET.$((10 + k))
  ip netns list | grep -qw "^$n" || ip netns add $n
  if ! ip link show $n-h >/dev/null 2>&1; then
    ip -n $n link del eth0 2>/dev/null || true
    ip link add $n-h type veth peer name eth0 netns $n
    ip link set $n-h master $BR up
    ip -n $n addr add $addr/24 dev eth0
    ip -n $n link set eth0 up; ip -n $n link set lo up
    ip -n $n route add default via $NET.1 2>/dev/null || true
  fi
done

# 4. slurm.conf (regenerated; restart daemons only when it changed)
cat > $ND/task-prolog.sh <<SH
#!/bin/sh
# TaskProlog: each task's node-local scratch (dwfhpc reads SLURM_TMPDIR among node.scratch_vars)
[ -d $SCRATCH ] && echo "export SLURM_TMPDIR=$SCRATCH"
exit 0
SH
chmod 755 $ND/task-prolog.sh
CTLD_ADDR=$NET.1 SLURMD_PER_NODE=1 ACCT_TYPE=accounting_storage/none
CONF_AFTER[TaskPlugin]="TaskProlog=$ND/task-prolog.sh"
CONF_BEFORE[ReturnToService]="# a node that comes back registers and is usable again; a lost one is DOWN after SlurmdTimeout"
CONF_AFTER[ReturnToService]="SlurmdTimeout=20
SlurmctldTimeout=20
MessageTimeout=5"
{
slurm_conf_common
echo "TmpFS=$SCRATCH"
k=0
for n in $NODES; do
  k=$((k + 1)); echo "NodeName=$n NodeAddr=$NET.$((10 + k)) CPUs=$CPUS RealMemory=$MEM State=UNKNOWN"
done
# LLN: each task goes to the least loaded node, so even a short array spreads over the nodes
echo "PartitionName=main Nodes=dwfn[1-$N] Default=YES MaxTime=INFINITE State=UP LLN=YES"
} > $P/slurm.conf.new
changed=$(replace_if_changed $P/slurm.conf.new $P/slurm.conf)

# 5. slurmctld on the host, then one slurmd per node (node-ctl.sh knows how to start one)
if [ "$changed" = 1 ]; then
  for n in $NODES; do SLURM_PREFIX=$P bash "$H/../node-ctl.sh" lose $n >/dev/null; done
  stop_daemon $V/run/slurmctld.pid
fi
start_slurmctld
for n in $NODES; do alive $ND/$n.pid || SLURM_PREFIX=$P bash "$H/../node-ctl.sh" start $n; done
for _ in $(seq 150); do
  [ "$(sinfo -h -N -o '%N %T' 2>/dev/null | grep -Ec ' (idle|mixed|allocated)$')" -ge "$N" ] && break; sleep 0.2
done
# shellcheck disable=SC2086
resume_down $NODES
echo "export SLURM_CONF=$SLURM_CONF"
sinfo -N -o '%N %T %c %m'
