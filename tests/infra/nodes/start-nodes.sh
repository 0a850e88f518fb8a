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
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
NODES=$(seq -f 'dwfn%g' 1 "$N" | tr '\n' ' ')

# 1. packages (only what is missing)
pk="munge slurmctld slurmd slurm-client iproute2 util-linux"
miss=$(for p in $pk; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$miss" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $miss
fi
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

# 2. munge with a private key and socket; the socket path is on the shared FS, so every node reaches it
chown munge:munge $M; chmod 0755 $M
[ -s $M/munge.key ] || { mungekey -c -k $M/munge.key; chown munge:munge $M/munge.key; chmod 0400 $M/munge.key; }
if ! alive $M/munged.pid; then
  runuser -u munge -- munged -S $SOCK --key-file=$M/munge.key --log-file=$M/munged.log \
      --pid-file=$M/munged.pid --seed-file=$M/munged.seed
fi
for i in $(seq 50); do munge -n -S $SOCK | unmunge -S $SOCK >/dev/null 2>&1 && break; sleep 0.1; done

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
{
cat <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$(hostname -s)($NET.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
StateSaveLocation=$V/state
SlurmdSpoolDir=$V/spool/%n
SlurmctldPidFile=$V/run/slurmctld.pid
SlurmdPidFile=$V/run/slurmd-%n.pid
SlurmctldLogFile=$V/log/slurmctld.log
SlurmdLogFile=$V/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
TaskProlog=$ND/task-prolog.sh
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$V/log/jobcomp.txt
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MaxArraySize=$MAX_ARRAY_SIZE
MaxJobCount=200000
MinJobAge=300
# a node that comes back registers and is usable again; a lost one is DOWN after SlurmdTimeout
ReturnToService=2
SlurmdTimeout=20
SlurmctldTimeout=20
MessageTimeout=5
MpiDefault=none
SlurmdParameters=config_overrides
MailProg=/bin/true
TmpFS=$SCRATCH
CONF
k=0
for n in $NODES; do
  k=$((k + 1)); echo "NodeName=$n NodeAddr=$NET.$((10 + k)) CPUs=$CPUS RealMemory=$MEM State=UNKNOWN"
done
# LLN: each task goes to the least loaded node, so even a short array spreads over the nodes
echo "PartitionName=main Nodes=dwfn[1-$N] Default=YES MaxTime=INFINITE State=UP LLN=YES"
} > $P/slurm.conf.new
changed=0
cmp -s $P/slurm.conf.new $P/slurm.conf && rm $P/slurm.conf.new || { mv $P/slurm.conf.new $P/slurm.conf; changed=1; }

# 5. slurmctld on the host, then one slurmd per node (node-ctl.sh knows how to start one)
if [ $changed = 1 ]; then
  for n in $NODES; do SLURM_PREFIX=$P bash "$H/../node-ctl.sh" lose $n >/dev/null; done
  if alive $V/run/slurmctld.pid; then pid=$(cat $V/run/slurmctld.pid); kill $pid; while kill -0 $pid 2>/dev/null; do sleep 0.2; done; fi
fi
alive $V/run/slurmctld.pid || slurmctld
for i in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
for n in $NODES; do alive $ND/$n.pid || SLURM_PREFIX=$P bash "$H/../node-ctl.sh" start $n; done
for i in $(seq 150); do
  [ "$(sinfo -h -N -o '%N %T' 2>/dev/null | grep -Ec ' (idle|mixed|allocated)$')" -ge "$N" ] && break; sleep 0.2
done
for n in $NODES; do
  if sinfo -h -o %T -n $n | grep -Eq 'down|drain'; then scontrol update nodename=$n state=resume; fi
done
echo "export SLURM_CONF=$SLURM_CONF"
sinfo -N -o '%N %T %c %m'
