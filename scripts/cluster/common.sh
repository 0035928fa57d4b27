# shellcheck shell=bash
# Shared by scripts/cluster/*.sh: names, paths and the steps of bringing a cluster up.
# Everything this cluster creates is named with the prefix "ctc-" (namespaces ctc-nI, host
# links ctc-vI, bridge ctc-br0) and listed in $CL_DIR/created as it is made.

# shellcheck source-path=SCRIPTDIR source=../slurm/conf.sh
source "$(dirname "${BASH_SOURCE[0]}")/../slurm/conf.sh"

CL_DIR=${COSMOTRAIN_CLUSTER_DIR:-/var/tmp/cosmotrain-cluster}
CL_CONF=$CL_DIR/slurm.conf
CL_NET=${COSMOTRAIN_CLUSTER_NET:-10.213.0}
CL_PORT=${COSMOTRAIN_CLUSTER_PORT:-6917}
CL_BRIDGE=ctc-br0
export SLURM_CONF=$CL_CONF

cl_die() { echo "cluster: error: $*" >&2; exit 1; }
cl_log() { echo "cluster: $*" >&2; }
cl_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
cl_record() { echo "$*" >>"$CL_DIR/created"; }
cl_node_addr() { echo "$CL_NET.$((10 + $1))"; }

cl_install() {
  if command -v slurmctld >/dev/null && command -v munged >/dev/null; then return 0; fi
  cl_log "installing slurm-wlm and munge (~15 s)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; }
}

# True when every daemon of the recorded cluster runs.
cl_is_up() {
  [ -s "$CL_DIR/created" ] || return 1
  local kind what
  while read -r kind what; do
    case $kind in
      pidfile) cl_alive "$what" || return 1 ;;
      netns) [ -e "/run/netns/$what" ] || return 1 ;;
    esac
  done <"$CL_DIR/created"
}

# Refuse to start on top of anything this cluster did not make: its subnet, names or ports.
cl_check_free() {
  local i
  if ip -4 -o addr show | grep -q " $CL_NET\."; then
    cl_die "subnet $CL_NET.0/24 is already used on this machine (ip -4 addr); set COSMOTRAIN_CLUSTER_NET to a free one, e.g. 10.214.0"
  fi
  if ip link show "$CL_BRIDGE" >/dev/null 2>&1; then
    cl_die "a link named $CL_BRIDGE exists but is not in $CL_DIR/created; remove it by hand if it is a leftover"
  fi
  for i in $(seq "$1"); do
    [ ! -e "/run/netns/ctc-n$i" ] || cl_die "network namespace ctc-n$i exists but is not in $CL_DIR/created; remove it (ip netns del ctc-n$i) if it is a leftover"
  done
  if ss -ltnH 2>/dev/null | awk '{print $4}' | grep -Eq ":($CL_PORT|$((CL_PORT + 1)))\$"; then
    cl_die "port $CL_PORT or $((CL_PORT + 1)) is in use; set COSMOTRAIN_CLUSTER_PORT to another"
  fi
}

# A bridge with this side's address, and per node a namespace joined to it by a veth pair.
cl_make_network() {
  local i ns
  ip link add "$CL_BRIDGE" type bridge
  cl_record link "$CL_BRIDGE"
  ip addr add "$CL_NET.1/24" dev "$CL_BRIDGE"
  ip link set "$CL_BRIDGE" up
  for i in $(seq "$1"); do
    ns=ctc-n$i
    ip netns add "$ns"
    cl_record netns "$ns"
    ip link add "ctc-v$i" type veth peer name eth0 netns "$ns"
    ip link set "ctc-v$i" master "$CL_BRIDGE" up
    ip -n "$ns" addr add "$(cl_node_addr "$i")/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$CL_NET.1"
    mkdir -p "$CL_DIR/nodetmp/n$i"
    chmod 1777 "$CL_DIR/nodetmp/n$i"
  done
}

# One munged of our own; its socket on a path is reachable from every namespace.
cl_start_munge() {
  local m=$CL_DIR/munge
  chown munge: "$m"; chmod 755 "$m"
  [ -f "$m/munge.key" ] || runuser -u munge -- mungekey -c -k "$m/munge.key"
  runuser -u munge -- munged --socket="$m/munge.sock" --key-file="$m/munge.key" \
    --pid-file="$m/munged.pid" --log-file="$m/munged.log" --seed-file="$m/munged.seed"
  cl_record pidfile "$m/munged.pid"
}

cl_write_conf() {
  local i cpus mem
  cpus=${COSMOTRAIN_CLUSTER_CPUS:-$(nproc)}
  mem=$(( $(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo) * 9 / 10 / $1 ))
  {
    slurm_conf_common ctcluster "ctl($CL_NET.1)" "$CL_PORT" "$CL_DIR" /%n .%n 5
    # A node that stops answering is DOWN after 10 s (a production site uses minutes); it
    # rejoins by itself when its slurmd starts again.
    echo "SlurmdTimeout=10"
    echo "MessageTimeout=5"
    echo "TmpFS=/tmp"
  } >"$CL_CONF"
  for i in $(seq "$1"); do
    echo "NodeName=n$i NodeAddr=$(cl_node_addr "$i") CPUs=$cpus RealMemory=$mem State=UNKNOWN" >>"$CL_CONF"
  done
  echo "PartitionName=cluster Nodes=n[1-$1] Default=YES MaxTime=INFINITE State=UP" >>"$CL_CONF"
}

# slurmctld checks that its hostname is the controller's: give it one of its own.
cl_start_slurmctld() {
  unshare --uts sh -c "hostname ctl && exec slurmctld -f '$CL_CONF' -i"
  cl_record pidfile "$CL_DIR/slurmctld.pid"
}

# slurmd of node I in its namespace, with its own hostname, /tmp and /dev/shm. nsenter, not
# `ip netns exec`: that remounts /sys, and slurmd then finds no /sys/fs/cgroup.
# A checkout under /tmp (a CI's fresh clone) stays visible on every node, as a parallel file
# system would be: it is bound into the node's own /tmp, in the node's mount namespace only.
cl_start_slurmd() {
  local i=$1 repo share=""
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
  case $repo in
    /tmp/*)
      mkdir -p "$CL_DIR/nodetmp/n$i/${repo#/tmp/}"
      share="mount --bind '$repo' '$CL_DIR/nodetmp/n$i/${repo#/tmp/}' && " ;;
  esac
  nsenter --net="/run/netns/ctc-n$i" unshare --uts --mount --propagation private sh -c \
    "$share mount --rbind '$CL_DIR/nodetmp/n$i' /tmp && mount -t tmpfs -o size=2g,mode=1777 ctc-shm-n$i /dev/shm \
     && hostname n$i && exec slurmd -N n$i -f '$CL_CONF'"
  grep -qx "pidfile $CL_DIR/slurmd.n$i.pid" "$CL_DIR/created" || cl_record pidfile "$CL_DIR/slurmd.n$i.pid"
}

# cl_shape MBIT: every node's link limited to MBIT Mbit/s each way (0 = unshaped).
# tbf's bucket holds 4 ms of traffic (at least 64 KB, one TCP segment offload): after an
# idle the link passes that many bytes at once. Its size goes to $CL_DIR/burst (bytes; the
# scaling model counts it, bench scaling-model).
cl_shape() {
  local mbit=$1 i burst n
  n=$(cat "$CL_DIR/nodes")
  burst=$(( mbit * 1000 * 4 / 8 ))  # bytes in 4 ms
  [ "$burst" -ge 65536 ] || burst=65536
  for i in $(seq "$n"); do
    if [ "$mbit" = 0 ]; then
      tc qdisc del dev "ctc-v$i" root 2>/dev/null || true
      tc -n "ctc-n$i" qdisc del dev eth0 root 2>/dev/null || true
    else
      tc qdisc replace dev "ctc-v$i" root tbf rate "${mbit}mbit" burst "$burst" latency 100ms
      tc -n "ctc-n$i" qdisc replace dev eth0 root tbf rate "${mbit}mbit" burst "$burst" latency 100ms
    fi
  done
  echo "$mbit" >"$CL_DIR/mbit"
  if [ "$mbit" = 0 ]; then echo 0 >"$CL_DIR/burst"; else echo "$burst" >"$CL_DIR/burst"; fi
}

cl_wait_idle() {
  local state want=$1
  for _ in $(seq 90); do
    state=$(sinfo -h -N -o '%N %T' 2>/dev/null || true)
    if [ "$(grep -c ' idle$' <<<"$state")" = "$want" ]; then return 0; fi
    grep -E ' (down|drain)' <<<"$state" | while read -r node _; do
      scontrol update nodename="$node" state=resume 2>/dev/null || true
    done
    sleep 1
  done
  tail -n 5 "$CL_DIR"/log/*.log >&2 || true
  cl_die "the nodes did not all become idle in 90 s (sinfo: ${state:-nothing}; logs in $CL_DIR/log)"
}
