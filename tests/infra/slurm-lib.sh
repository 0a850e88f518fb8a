# shellcheck shell=bash
# slurm-lib.sh - what the two private Slurm clusters share: sourced by start-slurm.sh (one node) and
# nodes/start-nodes.sh (SLURM_NODES nodes in namespaces), and for alive/stop_daemon by node-ctl.sh and the
# stop scripts. Only defines functions (and the CONF_BEFORE/CONF_AFTER arrays); it starts nothing itself.

# alive PIDFILE: true if PIDFILE names a running process
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_daemon PIDFILE: kill the process PIDFILE names, if it runs, and wait until it is gone (the file stays)
stop_daemon() {
  local pid
  alive "$1" || return 0
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
}

# install_missing PKG...: apt-get install only those Debian packages that are not installed (policy-rc.d/no systemd: nothing auto-starts)
install_missing() {
  local p miss=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || miss+=("$p"); done
  [ ${#miss[@]} -gt 0 ] || return 0
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${miss[@]}"
}

# start_munge DIR: munged with a private key and socket DIR/munge.socket (never /etc/munge or /run/munge) unless running; wait up to 5 s until it answers
start_munge() {
  local m=$1 s=$1/munge.socket
  mkdir -p "$m"; chown munge:munge "$m"; chmod 0755 "$m"
  [ -s "$m/munge.key" ] || { mungekey -c -k "$m/munge.key"; chown munge:munge "$m/munge.key"; chmod 0400 "$m/munge.key"; }
  if ! alive "$m/munged.pid"; then
    runuser -u munge -- munged -S "$s" --key-file="$m/munge.key" --log-file="$m/munged.log" \
        --pid-file="$m/munged.pid" --seed-file="$m/munged.seed"
  fi
  for _ in $(seq 50); do munge -n -S "$s" | unmunge -S "$s" >/dev/null 2>&1 && break; sleep 0.1; done
}

# slurm_conf_common: print the slurm.conf lines both clusters share (ClusterName .. MailProg) from CLUSTER CTLD_ADDR
# CTLD_PORT SLURMD_PORT SOCK V MAX_ARRAY_SIZE, ACCT_TYPE (default accounting_storage/none) and SLURMD_PER_NODE
# (1: spool dir, pid and log file per slurmd, %n); a cluster's own lines (comments, more settings) are
# CONF_BEFORE[Key] / CONF_AFTER[Key], printed just before / after setting Key
declare -A CONF_BEFORE=() CONF_AFTER=()
slurm_conf_common() {
  local line key dir="" file=""
  if [ "${SLURMD_PER_NODE:-0}" = 1 ]; then dir=/%n file=-%n; fi
  while IFS= read -r line; do
    key=${line%%=*}
    if [ -n "${CONF_BEFORE[$key]:-}" ]; then printf '%s\n' "${CONF_BEFORE[$key]}"; fi
    printf '%s\n' "$line"
    if [ -n "${CONF_AFTER[$key]:-}" ]; then printf '%s\n' "${CONF_AFTER[$key]}"; fi
  done <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$(hostname -s)($CTLD_ADDR)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
StateSaveLocation=$V/state
SlurmdSpoolDir=$V/spool$dir
SlurmctldPidFile=$V/run/slurmctld.pid
SlurmdPidFile=$V/run/slurmd$file.pid
SlurmctldLogFile=$V/log/slurmctld.log
SlurmdLogFile=$V/log/slurmd$file.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=${ACCT_TYPE:-accounting_storage/none}
JobCompType=jobcomp/filetxt
JobCompLoc=$V/log/jobcomp.txt
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MaxArraySize=$MAX_ARRAY_SIZE
MaxJobCount=200000
MinJobAge=300
ReturnToService=2
MpiDefault=none
SlurmdParameters=config_overrides
MailProg=/bin/true
CONF
}

# replace_if_changed NEW OLD: move NEW over OLD unless the two are identical (then remove NEW); prints 1 if OLD changed, else 0
replace_if_changed() { if cmp -s "$1" "$2"; then rm "$1" && echo 0; else mv "$1" "$2" && echo 1; fi; }

# start_slurmctld: slurmctld (SLURM_CONF, pid file $V/run/slurmctld.pid) unless running; wait up to 20 s until scontrol ping says UP
start_slurmctld() {
  alive "$V/run/slurmctld.pid" || slurmctld
  for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
}

# resume_down NODE...: put those of NODE... that Slurm has down or drained back in service
resume_down() {
  local n
  for n in "$@"; do
    if sinfo -h -o %T -n "$n" | grep -Eq 'down|drain'; then scontrol update nodename="$n" state=resume; fi
  done
}
