#!/bin/bash
# Vendored from ../shared/tools/wan/setup-wan.sh (the project's reference WAN emulator); changes:
# writes $WAN_DIR/link.env (MODE, CLIENT_DEV, SERVER_DEV, namespaces) so a test can cut the link
# with `ip -n $NS_CLIENT link set $CLIENT_DEV down` and bring it back.
# setup-wan.sh - emulated WAN between two network namespaces: 150 ms one-way delay
# + 200 Mbit/s each way (300 ms RTT), sshd (throwaway keys, key-only root login) in
# the server namespace.  Idempotent: tears down any previous instance first.
#  * kernel has sch_netem: veth pair + "tc qdisc ... netem delay rate limit" on both ends
#  * no sch_netem (this VM's kernel): TUN pair + userspace delay line (delayline.py)
#    + kernel tbf for the 200 Mbit/s rate on both ends
set -euo pipefail
H=$(cd "$(dirname "$0")" && pwd)   # this folder (delayline.py)
W=${WAN_DIR:-/tmp/dwfwan}           # keys, configs, logs, pid files
mkdir -p "$W"
C=${NS_CLIENT:-dwfwan-cli} S=${NS_SERVER:-dwfwan-srv}
CIP=10.77.0.1 SIP=10.77.0.2
DELAY_MS=${DELAY_MS:-150} RATE_MBIT=${RATE_MBIT:-200}
"$H/teardown-wan.sh" >/dev/null 2>&1 || true
ip netns add $C; ip netns add $S
ip -n $C link set lo up; ip -n $S link set lo up
ip link add vcli netns $C type veth peer name vsrv netns $S
if ip netns exec $C tc qdisc add dev vcli root netem delay ${DELAY_MS}ms rate ${RATE_MBIT}mbit limit 100000 2>/dev/null; then
  MODE=netem   # limit: netem queue must hold rate*delay (~2500 pkts); the default 1000 drops
  ip netns exec $S tc qdisc add dev vsrv root netem delay ${DELAY_MS}ms rate ${RATE_MBIT}mbit limit 100000
  ip -n $C addr add $CIP/24 dev vcli; ip -n $S addr add $SIP/24 dev vsrv
  ip -n $C link set vcli up; ip -n $S link set vsrv up
else
  MODE=tun+delayline
  ip -n $C link del vcli
  ip -n $C tuntap add dev tcli mode tun; ip -n $S tuntap add dev tsrv mode tun
  ip -n $C addr add $CIP peer $SIP dev tcli; ip -n $S addr add $SIP peer $CIP dev tsrv
  ip -n $C link set tcli up; ip -n $S link set tsrv up
  ip netns exec $C tc qdisc add dev tcli root tbf rate ${RATE_MBIT}mbit burst 64kb latency 300ms
  ip netns exec $S tc qdisc add dev tsrv root tbf rate ${RATE_MBIT}mbit burst 64kb latency 300ms
  nohup python3 "$H/delayline.py" $C tcli $S tsrv $DELAY_MS 0 >"$W/delayline.log" 2>&1 &
  echo $! > "$W/delayline.pid"
fi
if [ $MODE = netem ]; then CDEV=vcli SDEV=vsrv; else CDEV=tcli SDEV=tsrv; fi
printf 'MODE=%s\nNS_CLIENT=%s\nNS_SERVER=%s\nCLIENT_DEV=%s\nSERVER_DEV=%s\nCLIENT_IP=%s\nSERVER_IP=%s\n' \
  $MODE $C $S $CDEV $SDEV $CIP $SIP > "$W/link.env"
# throwaway keys + private sshd/ssh configs
[ -f $W/hostkey ] || ssh-keygen -q -t ed25519 -N '' -f $W/hostkey
[ -f $W/userkey ] || ssh-keygen -q -t ed25519 -N '' -f $W/userkey
cp $W/userkey.pub $W/authorized_keys; chmod 600 $W/authorized_keys; rm -f $W/known_hosts
cat > $W/sshd_config <<CONF
ListenAddress $SIP
Port 22
HostKey $W/hostkey
PidFile $W/sshd.pid
AuthorizedKeysFile $W/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 64
MaxSessions 64
CONF
cat > $W/ssh_config <<CONF
Host wan-server $SIP
  HostName $SIP
  User root
  IdentityFile $W/userkey
  IdentitiesOnly yes
  UserKnownHostsFile $W/known_hosts
  StrictHostKeyChecking accept-new
  BatchMode yes
CONF
mkdir -p /run/sshd    # privilege-separation dir, normally made by the init script
ip netns exec $S /usr/sbin/sshd -f $W/sshd_config -E $W/sshd.log
for i in $(seq 50); do
  ip netns exec $C ssh -F $W/ssh_config -o ConnectTimeout=5 wan-server true 2>/dev/null && break; sleep 0.2
done
echo "mode=$MODE"
command -v ping >/dev/null && ip netns exec $C ping -c 3 -q $SIP | tail -1
echo "use: ip netns exec $C rsync -e 'ssh -F $W/ssh_config' SRC wan-server:DST"
