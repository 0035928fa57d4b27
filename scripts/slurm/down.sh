#!/usr/bin/env bash
# Stop the localhost SLURM cluster of scripts/slurm/up.sh: cancel its jobs, then stop
# slurmd, slurmctld and munged by the PIDs in their pid files (never by name).
#   COSMOTRAIN_SLURM_DIR   state directory (default /tmp/cosmotrain-slurm)
#   COSMOTRAIN_SLURM_KEEP  1 = keep the directory (logs) afterwards (default: keep)
set -euo pipefail

dir=${COSMOTRAIN_SLURM_DIR:-/tmp/cosmotrain-slurm}
export SLURM_CONF=$dir/slurm.conf

stop() {  # stop PIDFILE: TERM, wait up to 20 s, then KILL
  local pid
  [ -f "$1" ] || return 0
  pid=$(cat "$1")
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "slurm/down.sh: $1 ($pid) ignored TERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$1"
}

# Jobs first, so no slurmstepd outlives the cluster.
if [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
  jobs=$(squeue -h -o %i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086  # one job id per word
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 30); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 1; done
  fi
fi
stop "$dir/slurmd.pid"
stop "$dir/slurmctld.pid"
stop "$dir/munge/munged.pid"
if [ "${COSMOTRAIN_SLURM_KEEP:-1}" = 1 ]; then
  echo "slurm/down.sh: stopped (logs in $dir/log)"
else
  rm -rf "$dir"
  echo "slurm/down.sh: stopped, $dir removed"
fi
