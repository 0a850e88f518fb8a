#!/bin/bash
# start-slurm.sh - idempotent private single-node Slurm 22.05 (Debian 12) as root, no systemd, no cgroups.
# Adapted from the project's reference (shared/tools/slurm); used by tests/conftest.py and .ci/.
# Settings: SLURM_PREFIX (state+config dir), WITH_DBD (0|1), SLURM_CPUS (CPUs the node advertises,
# default 4: tasks in tests are light), MAX_ARRAY_SIZE (default 100001), ports CTLD_PORT etc.
#   munged (private key+socket) -> [mariadbd -> slurmdbd] -> slurmctld -> slurmd
# Usage:  WITH_DBD=0|1 ./start-slurm.sh ; then: export SLURM_CONF=<dir>/slurm.conf
# Re-running is safe: installs only missing packages, starts only daemons that are not
# running, rewrites slurm.conf and restarts slurmctld/slurmd only if the config changed.
set -euo pipefail
# SLURM_NODES=3: one slurmctld + 3 slurmd, each node in its own namespaces (see tests/infra/nodes/start-nodes.sh)
if [ "${SLURM_NODES:-1}" -gt 1 ]; then exec bash "$(dirname "$0")/nodes/start-nodes.sh" "$@"; fi
P=${SLURM_PREFIX:-/tmp/dwf-slurm}; mkdir -p "$P"   # config + state live here
WITH_DBD=${WITH_DBD:-0}
MAX_ARRAY_SIZE=${MAX_ARRAY_SIZE:-100001}
CTLD_PORT=${CTLD_PORT:-7817} SLURMD_PORT=${SLURMD_PORT:-7818}  # not 6817/6818: may coexist
DBD_PORT=${DBD_PORT:-7819}   DB_PORT=${DB_PORT:-3417}          # with a distro slurm/mysql
CLUSTER=${CLUSTER:-dwflocal}
NODE=$(hostname -s); CPUS=${SLURM_CPUS:-4}
MEM=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 1024 ))
V=$P/var; M=$V/munge; SOCK=$M/munge.socket
export SLURM_CONF=$P/slurm.conf
# shellcheck source-path=SCRIPTDIR source=slurm-lib.sh
. "$(dirname "$0")/slurm-lib.sh"

# 1. packages (only what is missing; policy-rc.d/no-systemd means nothing auto-starts)
pk=(munge slurmctld slurmd slurm-client); [ "$WITH_DBD" = 1 ] && pk+=(slurmdbd mariadb-server)
install_missing "${pk[@]}"
mkdir -p $V/state $V/spool $V/log $V/run $M

# 2. munge with a private key and socket $SOCK (does not touch /etc/munge or /run/munge)
start_munge $M

# 3. slurm.conf (regenerated; restart daemons only when it changed)
CTLD_ADDR=127.0.0.1 SLURMD_PER_NODE=0 ACCT_TYPE=accounting_storage/none  # not from the caller's environment
CONF_BEFORE[SchedulerParameters]="# batch_sched_delay=0: ~1 s per array wave instead of ~3 s"
CONF_BEFORE[SlurmdParameters]="# advertise SLURM_CPUS even where the machine has fewer cores (light test tasks share them)"
if [ "$WITH_DBD" = 1 ]; then
  ACCT_TYPE=accounting_storage/slurmdbd
  CONF_AFTER[AccountingStorageType]="AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# for slurmdbd, AccountingStoragePass = munge socket used on the ctld/client -> dbd link
AccountingStoragePass=$SOCK"
fi
{
  slurm_conf_common
  echo "NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN"
  echo "PartitionName=main Nodes=$NODE Default=YES MaxTime=INFINITE State=UP"
} > $P/slurm.conf.new
changed=$(replace_if_changed $P/slurm.conf.new $P/slurm.conf)

# 4. optional accounting: private mariadb + slurmdbd
if [ "$WITH_DBD" = 1 ]; then
  D=$V/mysql; R=$V/mysqlrun; DS=$R/mysqld.sock
  if [ ! -d $D/mysql ]; then
    mkdir -p $D; chown mysql:mysql $D
    mariadb-install-db --no-defaults --user=mysql --datadir=$D --skip-test-db >$V/log/mariadb-install.log 2>&1
  fi
  mkdir -p $R; chown mysql:mysql $R       # mariadbd (user mysql) writes socket/pid/log here
  if ! alive $R/mysqld.pid; then
    nohup mariadbd --no-defaults --user=mysql --datadir=$D --socket=$DS --pid-file=$R/mysqld.pid \
      --bind-address=127.0.0.1 --port=$DB_PORT --log-error=$R/mariadb.err \
      --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 >/dev/null 2>&1 &
    for _ in $(seq 100); do mariadb --no-defaults -S $DS -uroot -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  mariadb --no-defaults -S $DS -uroot -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  cat > $P/slurmdbd.conf <<CONF
AuthType=auth/munge
AuthInfo=socket=$SOCK
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$V/run/slurmdbd.pid
LogFile=$V/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
CONF
  chmod 600 $P/slurmdbd.conf   # slurmdbd refuses a world-readable conf
  if ! alive $V/run/slurmdbd.pid; then
    slurmdbd
    for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  sacctmgr -n list cluster format=cluster | grep -qw $CLUSTER || sacctmgr -i add cluster $CLUSTER >/dev/null
fi

# 5. slurmctld + slurmd
if [ "$changed" = 1 ]; then stop_daemon $V/run/slurmd.pid; stop_daemon $V/run/slurmctld.pid; fi
start_slurmctld
alive $V/run/slurmd.pid || slurmd
for _ in $(seq 100); do sinfo -h -o %T -n $NODE 2>/dev/null | grep -Eq '^(idle|mixed|allocated)' && break; sleep 0.2; done
resume_down $NODE
echo "export SLURM_CONF=$SLURM_CONF"
sinfo
