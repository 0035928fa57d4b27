#!/usr/bin/env bash
# Builds the project environment: Open MPI (apt, when missing and root), a Python 3.11
# virtualenv from requirements/cpu.lock, mpi4py and Horovod compiled against that Open MPI,
# then cosmotrain itself in editable mode.
#
# The pinned packages live in a shared virtualenv in a cache folder keyed by a hash of the
# lock files, so a fresh clone with unchanged locks reuses it and `make env` takes seconds.
# ./.venv is this checkout's own thin virtualenv on top of it (checkout_venv): it sees the
# shared packages and imports cosmotrain from this checkout, whatever other clones do.
#   COSMOTRAIN_ENV_CACHE  where cached environments live (default ~/.cache/cosmotrain)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cache=${COSMOTRAIN_ENV_CACHE:-$HOME/.cache/cosmotrain}

die() { echo "setup_env: $*" >&2; exit 1; }
say() { echo "setup_env: $*"; }

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    die "missing $*; install them (apt-get install $*) or 'module load' an Open MPI 4.1 and retry"
  fi
  say "installing $* with apt-get"
  if ! find /var/lib/apt/lists -maxdepth 1 -type f ! -name lock 2>/dev/null | grep -q .; then
    apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
}

system_packages() {
  local need=()
  command -v mpicc >/dev/null || need+=(libopenmpi-dev openmpi-bin)
  command -v g++ >/dev/null || need+=(g++)
  command -v make >/dev/null || need+=(make)
  [ -x /usr/bin/cmake ] || command -v cmake >/dev/null || need+=(cmake)
  find_python >/dev/null || need+=(python3 python3-venv python3-dev)
  if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi
  mpirun --version | head -n 1 | grep -q "Open MPI" \
    || die "mpirun is not Open MPI; load Open MPI 4.1 (module load openmpi) and retry"
}

lint_tools() {
  # The job scripts' lint tests in `make test` need shellcheck: installed where we can
  # (root), else those tests skip and say so.
  command -v shellcheck >/dev/null || [ "$(id -u)" != 0 ] || apt_install shellcheck \
    || say "shellcheck could not be installed; the job scripts' lint tests will skip"
}

find_python() {
  # The base interpreter, never a virtualenv's (the Makefile puts .venv/bin first on PATH).
  local py
  for py in python3.11 python3 /usr/bin/python3; do
    command -v "$py" >/dev/null || continue
    "$py" -c 'import sys, venv; assert sys.version_info[:2] == (3, 11)' 2>/dev/null || continue
    "$py" -c 'import sys; print(sys._base_executable)'; return 0
  done
  return 1
}

env_key() {
  # The locks and the build recipe itself (declare -f prints it without comments).
  { cat requirements/cpu.lock requirements/horovod.lock; declare -f build_venv; } | sha256sum | cut -c1-16
}

build_venv() {
  local dest=$1 py
  py=$(find_python) || die "Python 3.11 not found; install python3.11 with venv support"
  say "creating $dest with $py (first run: ~5 min, Horovod is compiled)"
  # An interrupted build has no .complete marker and is rebuilt from scratch next time.
  "$py" -m venv "$dest"
  "$dest/bin/python" -m pip install -q --upgrade "pip==24.3.1" "setuptools==75.6.0" "wheel==0.45.1"
  "$dest/bin/python" -m pip install -q --no-binary mpi4py -r requirements/cpu.lock
  # Horovod: compiled against this TensorFlow and the system Open MPI, with system cmake.
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS=-j"$(nproc)" \
    "$dest/bin/python" -m pip install -q --no-build-isolation --no-cache-dir -r requirements/horovod.lock
  check_build "$dest"
  touch "$dest/.complete"
}

check_build() {
  local out
  out=$("$1/bin/horovodrun" --check-build 2>&1) || die "horovodrun --check-build failed: $out"
  for part in TensorFlow MPI Gloo; do
    echo "$out" | grep -q "\[X\] $part" || die "Horovod was built without $part; delete $1 and rerun make env"
  done
  say "horovodrun --check-build: TensorFlow, MPI and Gloo present"
}

checkout_venv() {
  # ./.venv: a virtualenv of this checkout whose site-packages chain the shared ones ($1)
  # through a .pth; cosmotrain installed editable from here; every console script of the
  # shared venv (pytest, horovodrun, ...) copied with .venv's python in its #! line.
  local shared=$1 site
  if [ -L .venv ] || [ "$(cat .venv/.shared 2>/dev/null)" != "$shared" ]; then
    rm -rf .venv
    "$shared/bin/python" -m venv --without-pip .venv
    site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "import site; site.addsitedir('$shared/lib/python3.11/site-packages')" > "$site/_cosmotrain_shared.pth"
    echo "$shared" > .venv/.shared
  fi
  local script name
  for script in "$shared"/bin/*; do
    name=$(basename "$script")
    [ -e ".venv/bin/$name" ] && continue
    head -c 200 "$script" | head -n 1 | grep -q "^#!$shared/bin/python" || continue
    { echo "#!$here/.venv/bin/python"; tail -n +2 "$script"; } > ".venv/bin/$name"
    chmod +x ".venv/bin/$name"
  done
  if [ "$(.venv/bin/python -c 'import cosmotrain, os; print(os.path.dirname(cosmotrain.__file__))' 2>/dev/null)" \
       != "$here/src/cosmotrain" ] || [ ! -x .venv/bin/cosmotrain ]; then
    "$shared/bin/python" -m pip --python .venv/bin/python install -q --no-deps --no-build-isolation -e . 2>&1 \
      | grep -v "^WARNING: Location" || true
  fi
  .venv/bin/python -c 'import cosmotrain, horovod.tensorflow' || die "the environment in .venv does not import; rm -rf .venv and rerun make env"
}

main() {
  system_packages
  lint_tools
  local venv
  venv="$cache/venv-$(env_key)"
  mkdir -p "$cache"
  if [ ! -f "$venv/.complete" ]; then
    rm -rf "$venv"
    build_venv "$venv"
  else
    check_build "$venv"
  fi
  # cosmotrain is never installed in the shared venv: each checkout's .venv has its own.
  if compgen -G "$venv/lib/python3.11/site-packages/*cosmotrain*" >/dev/null; then
    "$venv/bin/python" -m pip uninstall -y -q cosmotrain 2>&1 | grep -v "^WARNING" || true
  fi
  checkout_venv "$venv"
  say "ready: .venv on $venv"
}

main "$@"
