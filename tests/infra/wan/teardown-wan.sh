#!/bin/bash
# Vendored unchanged (but for this line) from ../shared/tools/wan/teardown-wan.sh.
# teardown-wan.sh - undo setup-wan.sh: stop our sshd + delay line (by pidfile), then
# anything still running inside our two namespaces, then delete the namespaces.
W=${WAN_DIR:-/tmp/dwfwan}
C=${NS_CLIENT:-dwfwan-cli} S=${NS_SERVER:-dwfwan-srv}
for f in sshd.pid delayline.pid; do
  [ -s $W/$f ] && kill "$(cat $W/$f)" 2>/dev/null; rm -f $W/$f
done
for ns in $S $C; do for p in $(ip netns pids $ns 2>/dev/null); do kill "$p" 2>/dev/null; done; done
sleep 0.3
ip netns del $C 2>/dev/null; ip netns del $S 2>/dev/null  # removes veth/tun devices too
if ip netns list | grep -Eq "^($C|$S)( |$)"; then echo "namespaces still present"; else echo "namespaces gone"; fi
