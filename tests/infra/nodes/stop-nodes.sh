#!/bin/bash
# stop-nodes.sh - tear down what start-nodes.sh made: every node's processes (and with them its tmpfs
# mounts), the node namespaces and veths, the bridge, slurmctld and munged (by pid file).
P=${SLURM_PREFIX:-/var/tmp/dwf-slurm-nodes}; V=$P/var
H=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../slurm-lib.sh
. "$H/../slurm-lib.sh"   # stop_daemon
NODES=$(seq -f 'dwfn%g' 1 "${SLURM_NODES:-3}" | tr '\n' ' '); NODES_BRIDGE=${NODES_BRIDGE:-dwfnbr0}
[ -s "$P/nodes.env" ] && . "$P/nodes.env"   # what start-nodes.sh recorded wins over the defaults
[ -s "$P/nodes.env" ] && for n in $NODES; do SLURM_PREFIX=$P bash "$H/../node-ctl.sh" lose "$n" >/dev/null; done
for n in $NODES; do ip netns del "$n" 2>/dev/null; done   # removes each veth pair too
ip link del "$NODES_BRIDGE" 2>/dev/null
for f in run/slurmctld.pid munge/munged.pid; do stop_daemon "$V/$f"; rm -f "$V/$f"; done
left=$(for n in $NODES; do ip netns list | grep -w "^$n"; done)
[ -z "$left" ] || echo "namespaces still present: $left" >&2
exit 0
