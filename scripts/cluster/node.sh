#!/usr/bin/env bash
# Fail or restore one node of the cluster of scripts/cluster/up.sh.
#   scripts/cluster/node.sh kill nI    the node is lost: SIGKILL every process in its namespace
#                                      (its slurmd, job steps and ranks), as if it lost power
#   scripts/cluster/node.sh start nI   start its slurmd again (fresh /dev/shm, same /tmp); SLURM
#                                      returns it to service (ReturnToService=2)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

if [ $# != 2 ] || ! [[ $2 =~ ^n([0-9]+)$ ]]; then cl_die "usage: node.sh kill|start nI"; fi
i=${BASH_REMATCH[1]}
if [ ! -e "/run/netns/ctc-n$i" ] || ! grep -qx "netns ctc-n$i" "$CL_DIR/created" 2>/dev/null; then
  cl_die "node $2 is not part of the cluster in $CL_DIR"
fi
case $1 in
  kill)
    pids=$(ip netns pids "ctc-n$i" | tr '\n' ' ')
    # shellcheck disable=SC2086  # one PID per word
    if [ -n "${pids// }" ]; then kill -KILL $pids; fi
    cl_log "node $2 lost: killed ${pids:-nothing}"
    ;;
  start)
    cl_alive "$CL_DIR/slurmd.n$i.pid" && cl_die "slurmd of $2 is already running"
    cl_start_slurmd "$i"
    cl_log "node $2: slurmd started"
    ;;
  *) cl_die "usage: node.sh kill|start nI" ;;
esac
