#!/usr/bin/env bash
# Bring up a one-node SLURM cluster on localhost: munged + slurmctld + slurmd.
#
# Everything (config, munge key and socket, state, spool, logs, pid files) lives in one
# directory of its own, so it neither needs nor touches /etc/slurm or a system munge.
# Prints the SLURM_CONF clients must use. Idempotent: a running cluster is reused.
# Needs root (slurmd starts jobs as their users). Stop it with scripts/slurm/down.sh.
#   COSMOTRAIN_SLURM_DIR   state directory (default /tmp/cosmotrain-slurm)
#   COSMOTRAIN_SLURM_PORT  slurmctld port; slurmd uses the next one (default 6817)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=conf.sh
source "$(dirname "${BASH_SOURCE[0]}")/conf.sh"

dir=${COSMOTRAIN_SLURM_DIR:-/tmp/cosmotrain-slurm}
port=${COSMOTRAIN_SLURM_PORT:-6817}
conf=$dir/slurm.conf

die() { echo "slurm/up.sh: $*" >&2; exit 1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

[ "$(id -u)" = 0 ] || die "needs root (slurmd runs jobs as their owners)"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm/up.sh: installing slurm-wlm and munge (~15 s)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; }
fi
if alive "$dir/slurmctld.pid" && alive "$dir/slurmd.pid" && alive "$dir/munge/munged.pid"; then
  echo "$conf"; exit 0
fi
mkdir -p "$dir"/{log,ctld,spool}

# --- munge: own key, socket and pid file; munged insists on running as its own user.
mkdir -p "$dir/munge"
# The socket directory must be searchable by everyone (clients are any user).
chown munge: "$dir/munge"; chmod 755 "$dir/munge"
[ -f "$dir/munge/munge.key" ] || runuser -u munge -- mungekey -c -k "$dir/munge/munge.key"
if ! alive "$dir/munge/munged.pid"; then
  runuser -u munge -- munged --socket="$dir/munge/munge.sock" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed"
fi

# --- slurm.conf: one node with this machine's cores and memory, one partition.
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo) * 9 / 10 ))
{
  slurm_conf_common cosmotrain localhost "$port" "$dir" "" "" 10
  echo "NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN"
  echo "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP"
} >"$conf"
export SLURM_CONF=$conf

# --- daemons: -i ignores state from an earlier cluster in this directory.
alive "$dir/slurmctld.pid" || slurmctld -f "$conf" -i
alive "$dir/slurmd.pid" || slurmd -f "$conf" -N localhost
for _ in $(seq 60); do
  state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
  case $state in
    idle|mixed|allocated) echo "$conf"; exit 0 ;;
    down*|drain*) scontrol update nodename=localhost state=resume 2>/dev/null || true ;;
  esac
  sleep 1
done
tail -n 5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
die "node localhost did not become idle in 60 s (state '${state:-none}'; logs in $dir/log)"
