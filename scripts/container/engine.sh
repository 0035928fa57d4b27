#!/usr/bin/env bash
# Start or stop a private Docker engine for the container tests: `engine.sh up|down`.
#
# No systemd and no network bridge here, so dockerd runs by hand with its own data root
# (kept between runs: the layer cache makes a rebuild take seconds), exec root, socket and
# pid file. `up` prints the DOCKER_HOST to use. `down` stops it by its pid file and
# unmounts what it left behind. Neither touches any other Docker engine.
#   COSMOTRAIN_DOCKER_DATA  data root   (default ~/.cache/cosmotrain/docker)
#   COSMOTRAIN_DOCKER_RUN   exec root, socket, pid file, log (default /tmp/cosmotrain-docker;
#                           keep it short: unix socket paths are limited to 108 bytes)
set -euo pipefail

data=${COSMOTRAIN_DOCKER_DATA:-$HOME/.cache/cosmotrain/docker}
run=${COSMOTRAIN_DOCKER_RUN:-/tmp/cosmotrain-docker}
sock=$run/docker.sock
pidfile=$run/dockerd.pid

# The client that came with dockerd (Debian docker.io) when present.
docker=${DOCKER:-$(command -v /usr/bin/docker || command -v docker || true)}

die() { echo "engine.sh: $*" >&2; exit 1; }

up() {
  if ! command -v dockerd >/dev/null || [ -z "$docker" ]; then die "dockerd not found; apt-get install docker.io"; fi
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "unix://$sock"; return 0
  fi
  mkdir -p "$data" "$run/exec"
  # --bridge=none etc.: no iptables/bridge on this host; builds and runs use the host or no network.
  setsid dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
    --data-root "$data" --exec-root "$run/exec" --pidfile "$pidfile" \
    -H "unix://$sock" >"$run/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 60); do
    if DOCKER_HOST="unix://$sock" "$docker" version >/dev/null 2>&1; then
      echo "unix://$sock"; return 0
    fi
    sleep 1
  done
  tail -n 20 "$run/dockerd.log" >&2
  die "dockerd did not come up in 60 s (log: $run/dockerd.log)"
}

down() {
  local pid
  if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && { echo "engine.sh: dockerd $pid ignored TERM; killing it" >&2; kill -KILL "$pid"; }
    rm -f "$pidfile"
  fi
  # What dockerd leaves mounted (netns/default, overlay/shm mounts), innermost first.
  awk -v a="$run/" -v b="$data/" 'index($2, a) == 1 || index($2, b) == 1 { print $2 }' /proc/self/mounts \
    | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
  return 0
}

case ${1:-} in
  up) up ;;
  down) down ;;
  *) die "usage: engine.sh up|down" ;;
esac
