#!/usr/bin/env bash
# Bring up an N-node SLURM cluster on this one machine: each node is a network namespace
# with its own IP on a private bridge, its own hostname and its own /tmp and /dev/shm
# (node-local scratch); every other path (the checkout, $COSMOTRAIN_CLUSTER_DIR) is shared
# by all nodes, like a parallel filesystem. One munged, one slurmctld, one slurmd per node.
#
#   scripts/cluster/up.sh [N]           N nodes (default 2), named n1..nN
# Settings (environment):
#   COSMOTRAIN_CLUSTER_DIR    state, logs and the nodes' /tmp (default /var/tmp/cosmotrain-cluster;
#                             must not be under /tmp, which every node hides behind its own)
#   COSMOTRAIN_CLUSTER_MBIT   shape every node's link to this many Mbit/s each way (tc tbf);
#                             unset or 0 = unshaped (change it later with shape.sh)
#   COSMOTRAIN_CLUSTER_CPUS   CPUs each node declares to SLURM (default: this machine's cores)
#   COSMOTRAIN_CLUSTER_NET    the /24 the nodes live in, as its first three numbers (default 10.213.0)
#   COSMOTRAIN_CLUSTER_PORT   slurmctld port; slurmd uses the next one (default 6917, not SLURM's 6817)
#
# Prints the SLURM_CONF clients must use, last. Everything it creates (namespaces, bridge,
# links, daemons) is recorded in $COSMOTRAIN_CLUSTER_DIR/created so that down.sh removes
# exactly that, by name and by PID. It refuses to start if its subnet or names are in use by
# anything it did not create. A cluster already up with the same N is reused.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

nodes=${1:-2}
[[ $nodes =~ ^[1-9][0-9]?$ ]] || cl_die "N must be a node count from 1 to 99, got '$nodes'"
[ "$(id -u)" = 0 ] || cl_die "needs root (network namespaces, slurmd runs jobs as their owners)"
case $CL_DIR in /tmp|/tmp/*) cl_die "COSMOTRAIN_CLUSTER_DIR=$CL_DIR is under /tmp, which every node replaces with its own; pick another folder" ;; esac
cl_install

if cl_is_up && [ "$(cat "$CL_DIR/nodes" 2>/dev/null)" = "$nodes" ]; then
  echo "$CL_CONF"; exit 0
fi
if [ -s "$CL_DIR/created" ]; then
  echo "cluster/up.sh: removing what an earlier cluster left in $CL_DIR" >&2
  bash "$here/down.sh" >&2
fi
cl_check_free "$nodes"
mkdir -p "$CL_DIR"/{log,ctld,spool,munge,shared}
: >"$CL_DIR/created"
echo "$nodes" >"$CL_DIR/nodes"
# A failure half way removes what was made so far.
undo() {
  local rc=$?
  if [ "$rc" != 0 ]; then echo "cluster/up.sh: failed; tearing down" >&2; bash "$here/down.sh" >&2 || true; fi
}
trap undo EXIT
trap 'exit 130' INT TERM HUP

cl_make_network "$nodes"
cl_start_munge
cl_write_conf "$nodes"
cl_start_slurmctld
for i in $(seq "$nodes"); do cl_start_slurmd "$i"; done
cl_shape "${COSMOTRAIN_CLUSTER_MBIT:-0}"
cl_wait_idle "$nodes"
trap - EXIT
echo "cluster/up.sh: $nodes node(s) up (${COSMOTRAIN_CLUSTER_MBIT:-unshaped} Mbit/s links; logs in $CL_DIR/log)" >&2
echo "$CL_CONF"
