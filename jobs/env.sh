# shellcheck shell=bash
# Shared by every jobs/*.sbatch: where things are, how ranks are launched, requeue on USR1.
#
# Settings (environment variables; sbatch passes the submitting shell's environment):
#   COSMOTRAIN_ROOT      the cosmotrain checkout (default: the directory sbatch ran in)
#   COSMOTRAIN_SIF       run every rank inside this Apptainer/Singularity image;
#                        unset = run from the virtualenv below
#   COSMOTRAIN_VENV      virtualenv holding `cosmotrain` (default: $COSMOTRAIN_ROOT/.venv)
#   COSMOTRAIN_LAUNCHER  srun (default: srun --mpi=pmix) or mpirun (Open MPI's, in the allocation)
#   COSMOTRAIN_WORK      data, runs and outputs (default: $SCRATCH/cosmotrain if $SCRATCH is
#                        set, else $COSMOTRAIN_ROOT/work)
#   COSMOTRAIN_CONFIG    the stage's YAML (default: the stage's configs/*.yaml in the checkout)
#   COSMOTRAIN_CONTAINER_RUNTIME  apptainer or singularity (default: whichever is on PATH)
#   COSMOTRAIN_MODULES   environment modules ct_setup loads first, e.g. "apptainer", or
#                        "openmpi/4.1 cuda/12.2" when running from a virtualenv (default: none)
#   COSMOTRAIN_PROGRESS  progress in the job log: log (default here: one line a minute,
#                        COSMOTRAIN_PROGRESS_SECONDS), off, or bar (carriage returns)
# Arguments given to the job script (sbatch jobs/x.sbatch --set a.b=c) go to cosmotrain.
#
# Interconnect (set in the submitting shell or below; sbatch passes them on, and apptainer
# passes the environment into the container). The images carry Open MPI 4.1 with UCX and
# libfabric (OFI), libibverbs and its providers (ibverbs-providers) and, in the GPU image, NCCL.
#   InfiniBand (verbs):   export OMPI_MCA_pml=ucx UCX_NET_DEVICES=mlx5_0:1
#   Slingshot / EFA (OFI): export OMPI_MCA_pml=cm OMPI_MCA_mtl=ofi FI_PROVIDER=cxi   (efa on AWS)
#   NCCL (GPU allreduce):  export NCCL_IB_HCA=mlx5 NCCL_SOCKET_IFNAME=ib0 NCCL_DEBUG=INFO
#     NCCL_DEBUG=INFO prints, once per rank, which transport NCCL chose ("NET/IB" is InfiniBand,
#     "NET/Socket" a fallback to TCP); on Slingshot/EFA NCCL needs the site's aws-ofi-nccl plugin.
#   TCP only (no fabric):  export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_pml=ob1 NCCL_IB_DISABLE=1
# docs/cluster.md#the-interconnect explains how to check what is used.

ct_log() { printf 'cosmotrain-job %s: %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$*" >&2; }
ct_die() { printf 'cosmotrain-job: error: %s\n' "$*" >&2; exit 1; }

COSMOTRAIN_ROOT=${COSMOTRAIN_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
COSMOTRAIN_WORK=${COSMOTRAIN_WORK:-${SCRATCH:+$SCRATCH/cosmotrain}}
COSMOTRAIN_WORK=${COSMOTRAIN_WORK:-$COSMOTRAIN_ROOT/work}
COSMOTRAIN_VENV=${COSMOTRAIN_VENV:-$COSMOTRAIN_ROOT/.venv}
COSMOTRAIN_LAUNCHER=${COSMOTRAIN_LAUNCHER:-srun}
# A job log is a file: progress as one dated line a minute, never carriage-return bars.
export COSMOTRAIN_PROGRESS=${COSMOTRAIN_PROGRESS:-log}
# Where each stage reads and writes; every one can be overridden on its own.
COSMOTRAIN_GALAXIES=${COSMOTRAIN_GALAXIES:-$COSMOTRAIN_WORK/data/galaxies}
COSMOTRAIN_CMB=${COSMOTRAIN_CMB:-$COSMOTRAIN_WORK/data/cmb}
COSMOTRAIN_CLASSIFIER_RUN=${COSMOTRAIN_CLASSIFIER_RUN:-$COSMOTRAIN_WORK/runs/classifier}
COSMOTRAIN_GAN_RUN=${COSMOTRAIN_GAN_RUN:-$COSMOTRAIN_WORK/runs/gan}
COSMOTRAIN_SAMPLES=${COSMOTRAIN_SAMPLES:-$COSMOTRAIN_WORK/samples/gan}
COSMOTRAIN_PREDICTIONS=${COSMOTRAIN_PREDICTIONS:-$COSMOTRAIN_WORK/predictions/classifier}

# Exit code of `cosmotrain train` after it checkpointed on SIGUSR1 (see ct_train).
CT_EXIT_REQUEUE=75

# CT_EXEC: the command prefix that runs `cosmotrain` on a rank (container or virtualenv).
ct_setup() {
  [ -n "${SLURM_JOB_ID:-}" ] || ct_die "not inside a SLURM job: submit with sbatch $0"
  ct_modules
  case $COSMOTRAIN_LAUNCHER in
    srun|mpirun) ;;
    *) ct_die "COSMOTRAIN_LAUNCHER=$COSMOTRAIN_LAUNCHER: use srun or mpirun" ;;
  esac
  if [ -n "${COSMOTRAIN_SIF:-}" ]; then
    [ -f "$COSMOTRAIN_SIF" ] || ct_die "COSMOTRAIN_SIF=$COSMOTRAIN_SIF: no such image file (build one: apptainer build cosmotrain.sif singularity/cosmotrain.def)"
    CT_RUNTIME=${COSMOTRAIN_CONTAINER_RUNTIME:-$(command -v apptainer || command -v singularity || true)}
    if [ -z "$CT_RUNTIME" ] || ! command -v "$CT_RUNTIME" >/dev/null; then
      ct_die "COSMOTRAIN_SIF is set but neither apptainer nor singularity is on PATH (module load apptainer?)"
    fi
    CT_EXEC=("$CT_RUNTIME" exec)
    if [ "$(ct_gpus_per_node)" -gt 0 ]; then CT_EXEC+=(--nv); fi
    CT_EXEC+=("$COSMOTRAIN_SIF" cosmotrain)
    ct_log "container: $CT_RUNTIME ${COSMOTRAIN_SIF}"
  else
    [ -x "$COSMOTRAIN_VENV/bin/cosmotrain" ] \
      || ct_die "no cosmotrain in COSMOTRAIN_VENV=$COSMOTRAIN_VENV (run 'make env' in the checkout, or set COSMOTRAIN_SIF)"
    CT_EXEC=("$COSMOTRAIN_VENV/bin/cosmotrain")
    ct_log "virtualenv: $COSMOTRAIN_VENV"
  fi
  ct_check_gpus
}

# COSMOTRAIN_MODULES: `module load` them (Lmod or Environment Modules) before anything else.
ct_modules() {
  [ -n "${COSMOTRAIN_MODULES:-}" ] || return 0
  if ! type module >/dev/null 2>&1; then
    # Batch shells are not login shells: load the site's module setup first.
    for init in /etc/profile.d/lmod.sh /etc/profile.d/modules.sh /usr/share/lmod/lmod/init/bash; do
      # shellcheck disable=SC1090
      if [ -f "$init" ]; then set +u; source "$init"; set -u; break; fi
    done
  fi
  type module >/dev/null 2>&1 \
    || ct_die "COSMOTRAIN_MODULES=$COSMOTRAIN_MODULES but this shell has no 'module' command; unset it, or load the modules in the job script"
  ct_log "module load $COSMOTRAIN_MODULES"
  set +u  # module scripts read unset variables
  # shellcheck disable=SC2086  # a list of module names
  module load $COSMOTRAIN_MODULES || { set -u; ct_die "module load $COSMOTRAIN_MODULES failed (module avail lists the names)"; }
  set -u
}

ct_gpus_per_node() {
  local gpus=${SLURM_GPUS_ON_NODE:-}
  # SLURM sets CUDA_VISIBLE_DEVICES=NoDevFiles on some sites when no GPU was allocated.
  if [ -z "$gpus" ] && [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && [ "$CUDA_VISIBLE_DEVICES" != NoDevFiles ]; then
    gpus=$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .)
  fi
  echo "${gpus:-0}"
}

ct_ranks_per_node() {  # SLURM_TASKS_PER_NODE looks like "4(x2),3"
  local tpn=${SLURM_NTASKS_PER_NODE:-${SLURM_TASKS_PER_NODE:-1}}
  tpn=${tpn%%[(,]*}
  echo "${tpn:-1}"
}

# More ranks than GPUs on a node: they share GPUs (slow, and may run out of GPU memory).
ct_check_gpus() {
  local gpus ranks
  gpus=$(ct_gpus_per_node); ranks=$(ct_ranks_per_node)
  if [ "$gpus" -gt 0 ] && [ "$ranks" -gt "$gpus" ]; then
    ct_log "warning: $ranks ranks per node but $gpus GPUs per node: ranks will share GPUs; submit with --ntasks-per-node=$gpus or --gpus-per-node=$ranks"
  fi
}

# ct_need_input NAME PATH: an input must exist, on the host and inside the container.
ct_need_input() {
  [ -e "$2" ] || ct_die "$1 $2 does not exist${3:+ ($3)}"
  CT_PATHS+=("$2")
}

# ct_output DIR: create an output's parent; it must be visible inside the container too.
ct_output() {
  mkdir -p "$(dirname "$1")"
  CT_PATHS+=("$(dirname "$1")")
}

# Every path in CT_PATHS must be visible inside the container: ask the container itself,
# which knows the site's default binds as well as $APPTAINER_BIND / $SINGULARITY_BIND.
ct_check_binds() {
  [ -n "${COSMOTRAIN_SIF:-}" ] && [ ${#CT_PATHS[@]} -gt 0 ] || return 0
  local missing var suggest
  # shellcheck disable=SC2016  # $p is expanded by the shell inside the container
  missing=$("$CT_RUNTIME" exec "$COSMOTRAIN_SIF" /bin/sh -c \
    'for p do [ -e "$p" ] || echo "$p"; done' sh "${CT_PATHS[@]}" | head -n 1) \
    || ct_die "cannot start $COSMOTRAIN_SIF with $CT_RUNTIME"
  [ -z "$missing" ] && return 0
  var=APPTAINER_BIND
  if [ "$(basename "$CT_RUNTIME")" = singularity ]; then var=SINGULARITY_BIND; fi
  # Suggest binding the path's top directory, added to what is already bound.
  suggest=${!var:+${!var},}/$(cut -d/ -f2 <<<"$missing")
  ct_die "$missing is not visible inside the container: bind it (export $var=$suggest) and resubmit"
}

# Stop signals: SIGUSR1 (SLURM's --signal=B:USR1@T, or `scancel --signal=USR1 --batch`) and
# SIGTERM (SLURM's time limit and pre-emption, KillWait seconds before SIGKILL) are trapped
# from the start, so they never kill this shell; once the ranks run they are forwarded.
CT_STOP=
CT_PID=
ct_on_signal() {
  CT_STOP=$1
  ct_log "got SIG$1"
  if [ -n "$CT_PID" ]; then kill "-$1" "$CT_PID" 2>/dev/null || true; fi
}
trap 'ct_on_signal USR1' USR1
trap 'ct_on_signal TERM' TERM

# ct_launch ARGS...: `cosmotrain ARGS` on every rank of the allocation. Runs in the background
# so this shell can forward SIGUSR1 to the ranks; sets CT_RC to the launcher's exit code.
ct_launch() {
  local -a launcher
  ct_check_binds
  if [ "$COSMOTRAIN_LAUNCHER" = srun ]; then
    # srun forwards USR1 to every task. Since SLURM 22.05 srun no longer inherits
    # --cpus-per-task from sbatch, so pass it on.
    launcher=(srun --mpi=pmix --kill-on-bad-exit=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}")
  else
    # Open MPI's mpirun reads the allocation from SLURM and forwards USR1 to its processes.
    launcher=(mpirun -np "${SLURM_NTASKS:-1}" --map-by "slot:PE=${SLURM_CPUS_PER_TASK:-1}" --bind-to core)
    # On SIGTERM mpirun passes it on and SIGKILLs the ranks 1 s later by default: leave them
    # the time to checkpoint (then mpirun exits 1, not 75; ct_train requeues all the same).
    export OMPI_MCA_odls_base_sigkill_timeout=${OMPI_MCA_odls_base_sigkill_timeout:-120}
    if [ "$(id -u)" = 0 ]; then launcher+=(--allow-run-as-root); fi
  fi
  ct_log "launch: ${launcher[*]} ${CT_EXEC[*]} $*"
  "${launcher[@]}" "${CT_EXEC[@]}" "$@" &
  CT_PID=$!
  # `wait` returns early (status > 128) when a trapped signal arrives: wait again then.
  while :; do
    wait "$CT_PID" && CT_RC=0 || CT_RC=$?
    if [ "$CT_RC" -gt 128 ] && kill -0 "$CT_PID" 2>/dev/null; then continue; fi
    break
  done
  CT_PID=
  ct_log "ranks exited with code $CT_RC"
}

# ct_run ARGS...: launch and fail the job with the ranks' exit code.
ct_run() {
  ct_launch "$@"
  return "$CT_RC"
}

# ct_train KIND RUN ARGS...: `cosmotrain train KIND --out RUN ARGS` with pre-emption support.
# Contract with `cosmotrain train`: on SIGUSR1 or SIGTERM every rank checkpoints at the next
# step boundary and exits with 75. Then this job requeues itself; the next start passes --resume.
ct_train() {
  local kind=$1 run=$2
  shift 2
  local -a resume=()
  if ct_has_checkpoint "$run"; then
    resume=(--resume)
    ct_log "resuming from $run/checkpoints (restart ${SLURM_RESTART_COUNT:-0})"
  fi
  ct_output "$run"
  if [ -n "$CT_STOP" ]; then ct_requeue "$run"; fi  # signalled before the ranks started
  ct_launch train "$kind" --out "$run" "$@" "${resume[@]}"
  # Exit 75: checkpointed. Any other failure after a stop signal (a rank got it before its
  # handler was installed, or mpirun's own exit code) lost nothing since the last
  # checkpoint, and a run without one starts afresh on --resume. Requeue all of these.
  if [ "$CT_RC" = "$CT_EXIT_REQUEUE" ] || { [ -n "$CT_STOP" ] && [ "$CT_RC" != 0 ]; }; then
    ct_requeue "$run"
  fi
  return "$CT_RC"
}

ct_requeue() {
  ct_log "requeueing job $SLURM_JOB_ID after SIG${CT_STOP:-USR1}; it resumes from $1/checkpoints"
  scontrol requeue "$SLURM_JOB_ID" \
    || ct_die "scontrol requeue $SLURM_JOB_ID failed (submitted with --no-requeue?); resubmit to resume from $1"
  sleep 60  # SLURM ends this shell as it requeues the job
  exit "$CT_EXIT_REQUEUE"
}

# A run holds a checkpoint when RUN/checkpoints has an entry that is not a temp file.
ct_has_checkpoint() {
  [ -d "$1/checkpoints" ] \
    && [ -n "$(find "$1/checkpoints" -mindepth 1 -maxdepth 1 ! -name '*.tmp*' ! -name '.*' -print -quit)" ]
}

# ct_config NAME: CT_CONFIG = COSMOTRAIN_CONFIG, else configs/NAME.yaml of the checkout.
ct_config() {
  CT_CONFIG=${COSMOTRAIN_CONFIG:-$COSMOTRAIN_ROOT/configs/$1.yaml}
  ct_need_input "config" "$CT_CONFIG" "set COSMOTRAIN_CONFIG"
}

CT_PATHS=()
