#!/usr/bin/env bash
# make cluster-test: the multi-node tests (tests/cluster) on a 4-node SLURM cluster on this
# machine (scripts/cluster/up.sh). The pytest session brings the cluster up and down; this
# script makes sure nothing it started outlives it, also when a test fails or the run is
# interrupted (Ctrl-C, SIGTERM): it then runs scripts/cluster/down.sh, which removes exactly
# what up.sh recorded.
#   COSMOTRAIN_CLUSTER_DIR   cluster state, logs and test files (default /var/tmp/cosmotrain-cluster)
#   extra arguments go to pytest, e.g. scripts/cluster/test.sh -k lost_node
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
export COSMOTRAIN_CLUSTER_DIR=${COSMOTRAIN_CLUSTER_DIR:-/var/tmp/cosmotrain-cluster}
[ -x "$repo/.venv/bin/pytest" ] || { echo "cluster-test: no .venv; run 'make env' first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "cluster-test: needs root (network namespaces; slurmd starts jobs as their users)" >&2; exit 1; }

was_up=0
if [ -s "$COSMOTRAIN_CLUSTER_DIR/created" ]; then was_up=1; fi
# shellcheck disable=SC2317  # cleanup and interrupted run from the traps below
cleanup() { if [ "$was_up" = 0 ]; then bash "$repo/scripts/cluster/down.sh" >/dev/null 2>&1 || true; fi; }
# On a signal, pytest is asked to stop (its fixtures tear down), then whatever is left goes.
pid=
# shellcheck disable=SC2317
interrupted() {
  if [ -n "$pid" ]; then kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  exit 130
}
trap cleanup EXIT
trap interrupted INT TERM HUP

# Test files go where every node sees them: not /tmp, which each node replaces with its own.
basetemp=$COSMOTRAIN_CLUSTER_DIR/shared/pytest
mkdir -p "$(dirname "$basetemp")"
start=$SECONDS
cd "$repo"
.venv/bin/pytest -q -p no:cacheprovider -rs --durations=10 -m cluster --basetemp="$basetemp" tests/cluster "$@" &
pid=$!
wait "$pid" && rc=0 || rc=$?
pid=
if [ "$rc" = 0 ]; then echo "cluster-test: passed in $((SECONDS - start)) s"; fi
exit "$rc"
