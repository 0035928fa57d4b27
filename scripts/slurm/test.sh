#!/usr/bin/env bash
# make slurm-test: every job script on a real one-node SLURM (munged + slurmctld + slurmd
# on localhost), through pytest (tests/slurm). The session fixture brings the cluster up and
# down; this script only makes sure nothing it started outlives it, even when interrupted.
#   COSMOTRAIN_SLURM_DIR   cluster state directory (default /tmp/cosmotrain-slurm)
#   extra arguments go to pytest, e.g. scripts/slurm/test.sh -k preempt
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
export COSMOTRAIN_SLURM_DIR=${COSMOTRAIN_SLURM_DIR:-/tmp/cosmotrain-slurm}
[ -x "$repo/.venv/bin/pytest" ] || { echo "slurm-test: no .venv; run 'make env' first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "slurm-test: needs root (slurmd starts jobs as their users)" >&2; exit 1; }
if ! command -v shellcheck >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null; }
fi

was_running=0
if [ -f "$COSMOTRAIN_SLURM_DIR/slurmctld.pid" ] && kill -0 "$(cat "$COSMOTRAIN_SLURM_DIR/slurmctld.pid")" 2>/dev/null; then
  was_running=1
fi
cleanup() { if [ "$was_running" = 0 ]; then bash "$repo/scripts/slurm/down.sh" >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT

start=$SECONDS
cd "$repo"
.venv/bin/pytest -q -p no:cacheprovider -rs --durations=5 tests/slurm "$@"
echo "slurm-test: passed in $((SECONDS - start)) s"
