#!/usr/bin/env bash
# Tear down the cluster of scripts/cluster/up.sh: exactly what $COSMOTRAIN_CLUSTER_DIR/created
# lists, nothing else. Cancels its jobs, stops its daemons by the PIDs in their pid files,
# kills what still runs inside its namespaces (job steps, ranks), deletes the namespaces and
# the bridge (their veth links go with them). Safe to run twice, or on a half-made cluster.
#   COSMOTRAIN_CLUSTER_DIR   the cluster's folder (default /var/tmp/cosmotrain-cluster)
#   COSMOTRAIN_CLUSTER_KEEP  1 = keep the nodes' /tmp contents too (default: keep only the logs)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

created=$CL_DIR/created
[ -s "$created" ] || { echo "cluster/down.sh: nothing recorded in $created; nothing to do" >&2; exit 0; }
# Further signals must not stop a teardown half way.
trap '' INT TERM HUP

stop() {  # stop PIDFILE: TERM, up to 10 s, then KILL
  local pid
  [ -f "$1" ] || return 0
  pid=$(cat "$1")
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

kill_inside() {  # every process in namespace $1: job steps and ranks left behind
  local pids
  [ -e "/run/netns/$1" ] || return 0
  pids=$(ip netns pids "$1" 2>/dev/null | tr '\n' ' ')
  # shellcheck disable=SC2086  # one PID per word
  if [ -n "${pids// }" ]; then kill -KILL $pids 2>/dev/null || true; fi
}

# Jobs first, while slurmctld can still end them cleanly.
if cl_alive "$CL_DIR/slurmctld.pid"; then
  jobs=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086  # one job id per word
    timeout 10 scancel $jobs 2>/dev/null || true
    for _ in $(seq 20); do [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
  fi
fi
# Daemons in reverse order of their start: slurmd's, slurmctld, munged.
tac "$created" | while read -r kind what; do
  if [ "$kind" = pidfile ]; then stop "$what"; fi
done
tac "$created" | while read -r kind what; do
  case $kind in
    netns) kill_inside "$what"; ip netns del "$what" 2>/dev/null || true ;;
    link) ip link del "$what" 2>/dev/null || true ;;
  esac
done
rm -f "$created" "$CL_DIR/nodes" "$CL_DIR/mbit" "$CL_DIR/burst"
if [ "${COSMOTRAIN_CLUSTER_KEEP:-0}" != 1 ]; then rm -rf "$CL_DIR/nodetmp" "$CL_DIR/spool" "$CL_DIR/ctld"; fi
echo "cluster/down.sh: stopped (logs in $CL_DIR/log)" >&2
