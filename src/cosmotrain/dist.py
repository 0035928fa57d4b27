"""The distributed runtime: the one module that talks to Horovod and to MPI.

Two engines, one contract:

* ``init_horovod()`` for training: Horovod over MPI (``mpirun``, ``srun --mpi=pmix``,
  ``horovodrun``) or Gloo (``horovodrun --gloo``); collectives on TensorFlow tensors.
* ``init_mpi()`` for data preparation and sampling: plain mpi4py, no TensorFlow.

Both work as a single plain process too. Both install an exception hook that turns an
uncaught error on any rank into a message on stderr and an abort of the whole job, so a
failing rank never leaves the others waiting in a collective.

Models and data code never import Horovod or mpi4py: they call the functions here, so the
engine can be swapped (Horovod is frozen upstream) without touching them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from typing import Any, Callable, Optional

from cosmotrain.placement import cores_per_rank, env_local_size, env_rank, set_mpi_env, set_thread_env, split_range

# Exit code of a training run that checkpointed on SIGUSR1 and wants to be requeued.
EXIT_REQUEUE = 75


@dataclasses.dataclass(frozen=True)
class Context:
    """Where this process stands in the job."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    engine: str = "single"  # "horovod-mpi", "horovod-gloo", "mpi" or "single"
    threads: int = 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0


_ctx = Context()
_hvd = None
_comm = None
_failures = None  # how failing ranks meet (MPI engines): "horovod", or a communicator of its own
_local = False    # inside compute_only(): training collectives stay on this rank
FAIL_WAIT = 5.0   # seconds a rank that met a mistake waits for the others to meet it too


def context() -> Context:
    """The current process's Context (a single-process one before any init)."""
    return _ctx


@dataclasses.dataclass(frozen=True)
class AllreduceConfig:
    """The ``allreduce`` section of a training config: how gradients cross the network.

    ``fp16`` sends gradients as float16 (half the bytes; Horovod's ``Compression.fp16``,
    summed in float16 and cast back). ``fusion_threshold_mb`` is Horovod's fusion buffer
    (MiB): the gradients ready in one cycle travel in as few allreduces of at most this size
    as possible; 0 sends every tensor on its own. ``cycle_time_ms`` is how often Horovod's
    background thread looks for ready tensors. None leaves Horovod's own setting
    (``HOROVOD_FUSION_THRESHOLD``, ``HOROVOD_CYCLE_TIME`` if exported, else 128 MiB and 1 ms).
    ``overlap`` true (the default, Horovod's own way) sends each gradient as soon as it is
    computed, overlapping the rest of the backward pass, in as many rounds as cycles pass
    meanwhile; false sends a network's gradients together once its backward pass is done,
    as one Horovod group: one negotiation, one round of fused buffers. The numbers are the
    same either way; only the time differs (``cosmotrain bench scaling-model``, 2 nodes at
    200 Mbit/s: true 60 ms per classifier step, false 66; docs/cluster.md).
    """

    fp16: bool = False
    fusion_threshold_mb: Optional[float] = None
    cycle_time_ms: Optional[float] = None
    overlap: bool = True

    def __post_init__(self):
        from cosmotrain.config import ConfigError

        if self.fusion_threshold_mb is not None and not self.fusion_threshold_mb >= 0:
            raise ConfigError(f"allreduce.fusion_threshold_mb must be >= 0 (0 = no fusion), got "
                              f"{self.fusion_threshold_mb}")
        if self.cycle_time_ms is not None and not self.cycle_time_ms > 0:
            raise ConfigError(f"allreduce.cycle_time_ms must be > 0, got {self.cycle_time_ms}")


# Horovod 0.28.1's own settings when neither the config nor the environment sets them.
HOROVOD_FUSION_THRESHOLD_MB = 128.0
HOROVOD_CYCLE_TIME_MS = 1.0


def set_horovod_env(allreduce: AllreduceConfig) -> None:
    """Export the config's fusion threshold and cycle time; Horovod reads them in ``hvd.init``."""
    if allreduce.fusion_threshold_mb is not None:
        os.environ["HOROVOD_FUSION_THRESHOLD"] = str(int(allreduce.fusion_threshold_mb * 2 ** 20))
    if allreduce.cycle_time_ms is not None:
        os.environ["HOROVOD_CYCLE_TIME"] = repr(float(allreduce.cycle_time_ms))


def horovod_settings() -> dict:
    """The fusion threshold (MiB) and cycle time (ms) Horovod runs with in this process."""
    threshold = os.environ.get("HOROVOD_FUSION_THRESHOLD")
    cycle = os.environ.get("HOROVOD_CYCLE_TIME")
    return {"fusion_threshold_mb": int(threshold) / 2 ** 20 if threshold else HOROVOD_FUSION_THRESHOLD_MB,
            "cycle_time_ms": float(cycle) if cycle else HOROVOD_CYCLE_TIME_MS}


def init_horovod(threads: int | None = None, allreduce: AllreduceConfig | None = None) -> Context:
    """Start Horovod, pin one GPU per local rank, size TensorFlow's thread pools.

    ``threads`` defaults to the cores this rank really has (see ``cores_per_rank``).
    ``allreduce`` sets Horovod's fusion threshold and cycle time: Horovod reads them from
    the environment once, in ``hvd.init``, so they are exported here, just before.
    """
    global _ctx, _hvd
    threads = threads or cores_per_rank(env_local_size())
    set_thread_env(threads)
    set_mpi_env()
    set_horovod_env(allreduce or AllreduceConfig())
    install_abort_hook()
    import horovod.tensorflow as hvd
    import tensorflow as tf

    hvd.init()
    _hvd = hvd
    _configure_tensorflow(tf, threads, hvd.local_rank())
    engine = "horovod-gloo" if hvd.gloo_enabled() else "horovod-mpi"
    _ctx = Context(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(), engine, threads)
    if engine == "horovod-mpi" and _ctx.size > 1:
        global _failures
        _failures = "horovod"  # a Horovod collective: MPI calls from a thread beside Horovod's can crash
    return _ctx


def _configure_tensorflow(tf: Any, threads: int, local_rank: int) -> None:
    """One GPU per local rank (memory grown on demand); intra-op pool = our cores."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        tf.config.set_visible_devices(gpus[local_rank % len(gpus)], "GPU")
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1 if threads <= 2 else 2)


def init_mpi(threads: int | None = None) -> Context:
    """Start plain MPI through mpi4py (no TensorFlow); works as a single process too.

    Under ``horovodrun --gloo`` there is no MPI job to join: a ``UserError`` says how to launch.
    """
    global _ctx, _comm
    if launched_by_gloo():
        from cosmotrain.errors import UserError

        raise UserError("this command runs on MPI ranks, and horovodrun --gloo starts none; launch it with mpirun "
                        "-np N, srun --mpi=pmix, or horovodrun without --gloo")
    threads = threads or cores_per_rank(env_local_size())
    set_thread_env(threads)
    set_mpi_env()
    install_abort_hook()
    from mpi4py import MPI

    _comm = MPI.COMM_WORLD
    local = _comm.Split_type(MPI.COMM_TYPE_SHARED)
    _ctx = Context(_comm.Get_rank(), _comm.Get_size(), local.Get_rank(), local.Get_size(), "mpi", threads)
    if _ctx.size > 1:
        _meet_failures()
    return _ctx


def _meet_failures() -> None:
    """The communicator on which ranks that met a mistake wait for each other (``fail``); collective."""
    global _failures
    from mpi4py import MPI

    _failures = MPI.COMM_WORLD.Dup()


def launched_by_gloo() -> bool:
    """Started by ``horovodrun --gloo``: several ranks, but no MPI job among them."""
    return "HOROVOD_GLOO_RENDEZVOUS_ADDR" in os.environ and "OMPI_COMM_WORLD_SIZE" not in os.environ


# ---------------------------------------------------------------- sharing out work

def share(n: int, align: int = 1) -> tuple[int, int]:
    """This rank's contiguous part [start, stop) of ``n`` items (``split_range``)."""
    return split_range(n, _ctx.rank, _ctx.size, align)


# ---------------------------------------------------------------- failure handling

def install_abort_hook() -> None:
    """Make an uncaught exception on any rank end the whole job, quickly and loudly."""
    sys.excepthook = _on_uncaught


def _on_uncaught(kind, err, tb) -> None:
    fail(err, tb)
    abort(2)  # reached when every rank met the same mistake and printed it


def fail(err: BaseException, tb=None) -> None:
    """Report ``err`` on stderr (one line if it is a UserError), then end the whole job.

    A mistake that every rank meets (a bad input found while checking, before any work) is
    printed by every rank: the ranks wait up to ``FAIL_WAIT`` seconds for each other, and if
    all arrive this returns on every rank (the caller exits with code 2). Before any runtime
    is up a UserError is printed and this returns. Otherwise, and for any other exception,
    the whole job is aborted at once.
    """
    from cosmotrain.errors import UserError

    kind = type(err)
    if isinstance(err, UserError):
        say(f"error: {err}")
        if _ctx.size == 1:
            if launched_by_gloo():
                # No collective to meet on: horovodrun ends the other ranks as soon as one
                # exits, so wait to let those meeting the same mistake print it too.
                time.sleep(FAIL_WAIT)
            return
        if _everyone_failed(FAIL_WAIT):
            return
    else:
        sys.__excepthook__(kind, err, tb)
        say(f"aborting the job after {kind.__name__}")
    abort(2 if isinstance(err, UserError) else 1)


def say(text: str) -> None:
    """Write ``cosmotrain [rank r]: text`` to stderr as one line in one system call.

    One ``write`` per line, so the lines of ranks sharing a pipe (mpirun, srun) never
    interleave mid-line. A single process started alone prints no rank.
    """
    rank = _ctx.rank if _ctx.size > 1 else env_rank()
    tag = f" [rank {rank}]" if _ctx.size > 1 or rank else ""
    line = f"cosmotrain{tag}: {text}\n"
    sys.stderr.flush()
    try:
        os.write(sys.stderr.fileno(), line.encode())
    except (AttributeError, OSError, ValueError):  # stderr replaced by an in-memory stream
        sys.stderr.write(line)
        sys.stderr.flush()


def _everyone_failed(wait: float) -> bool:
    """True when every rank reaches this point within ``wait`` seconds (MPI engines only).

    A blocking collective in a thread of its own, waited for with a timeout. Under Horovod
    it is a Horovod allreduce, so only Horovod's background thread calls MPI: a barrier of
    our own beside it crashed about one job in 40 (Open MPI 4.1, segfault in the barrier),
    and so did Open MPI's non-blocking barrier polled beside it. Without Horovod it is a
    barrier on a communicator of its own.
    """
    if _failures is None:
        return False
    import threading

    met = threading.Event()
    threading.Thread(target=lambda: (_meet(), met.set()), name="failure-meeting", daemon=True).start()
    return met.wait(wait)


def _meet() -> None:
    """Block until every rank calls this (``_everyone_failed``'s thread)."""
    if _failures == "horovod":
        import tensorflow as tf  # already loaded by Horovod's TensorFlow binding

        _hvd.allreduce(tf.ones([1]), op=_hvd.Sum, name="cosmotrain_failure_meeting")
    else:
        _failures.Barrier()


def abort(code: int = 1) -> None:
    """End every rank of the job now: MPI_Abort under MPI, a hard exit otherwise."""
    sys.stdout.flush()
    sys.stderr.flush()
    if _ctx.size > 1:
        time.sleep(0.5)  # let ranks that hit the same error print it before the kill
    if _ctx.engine in ("mpi", "horovod-mpi"):
        from mpi4py import MPI  # Horovod already initialised MPI: this only binds to it

        MPI.COMM_WORLD.Abort(code)
    os._exit(code)


# ---------------------------------------------------------------- plain-MPI collectives

def barrier() -> None:
    """Wait for every rank."""
    if _ctx.engine == "mpi":
        _comm.Barrier()
    elif _hvd is not None and _ctx.size > 1:
        _hvd.join()


def allgather_object(obj: Any) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if _ctx.size == 1:
        return [obj]
    if _ctx.engine == "mpi":
        return _comm.allgather(obj)
    return _hvd.allgather_object(obj)


def gather_object(obj: Any, root: int = 0) -> list | None:
    """Every rank's ``obj`` in rank order on ``root``; None elsewhere."""
    if _ctx.size == 1:
        return [obj]
    if _ctx.engine == "mpi":
        return _comm.gather(obj, root=root)
    everything = _hvd.allgather_object(obj)
    return everything if _ctx.rank == root else None


def broadcast_object(obj: Any, root: int = 0) -> Any:
    """``root``'s ``obj`` on every rank."""
    if _ctx.size == 1:
        return obj
    if _ctx.engine == "mpi":
        return _comm.bcast(obj, root=root)
    return _hvd.broadcast_object(obj, root_rank=root)


def root_computes(fn: Callable[..., Any], *args: Any, share: bool = True) -> Any:
    """Run ``fn`` on rank 0 and hand its result to every rank.

    ``share=False`` keeps a large result on rank 0 (the others get None). A UserError that
    ``fn`` raises (a bad input found while checking) is raised on every rank, so each prints
    the same one-line message instead of dying silently in the abort.
    """
    from cosmotrain.errors import UserError

    result, message = None, None
    if _ctx.is_root:
        try:
            result = fn(*args)
        except UserError as err:
            message = str(err)
    shared, message = broadcast_object((result if share else None, message))
    if message is not None:
        raise UserError(message)
    return shared if share else result


def allreduce_sum_array(array):
    """Element-wise sum of a NumPy array over ranks (float64 or int64), on every rank."""
    import numpy as np

    array = np.ascontiguousarray(array)
    if _ctx.size == 1:
        return array.copy()
    if _ctx.engine == "mpi":
        out = np.empty_like(array)
        _comm.Allreduce(array, out)
        return out
    return _hvd.allreduce(array, op=_hvd.Sum, name=None).numpy()


def agree(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank (e.g. a signal arrived)."""
    import numpy as np

    return bool(allreduce_sum_array(np.array([int(flag)], dtype=np.int64))[0] > 0)


# ---------------------------------------------------------------- messages to rank 0 (plain MPI)
# Ranks with uneven work (a resumed sample set) cannot meet in a collective to report
# progress, so they post small messages to rank 0, which reads them when it has a moment.
# One rank, or an engine other than plain MPI: these are no-ops.

_PROGRESS_TAG = 7301
_posted: list = []


def send_to_root(obj: Any, tag: int = _PROGRESS_TAG) -> None:
    """Post ``obj`` to rank 0 without waiting for it to be received (non-root ranks)."""
    if _ctx.size == 1 or _ctx.engine != "mpi" or _ctx.rank == 0:
        return
    _posted.append(_comm.isend(obj, dest=0, tag=tag))
    _posted[:] = [req for req in _posted if not req.Test()]


def receive_posted(block: bool = False, tag: int = _PROGRESS_TAG) -> list[tuple[int, Any]]:
    """On rank 0: the posted messages that have arrived, as (source rank, obj).

    ``block`` waits for at least one message; otherwise this never waits.
    """
    if _ctx.size == 1 or _ctx.engine != "mpi" or _ctx.rank != 0:
        return []
    from mpi4py import MPI

    status = MPI.Status()
    found = []
    if block:
        obj = _comm.recv(source=MPI.ANY_SOURCE, tag=tag, status=status)
        found.append((status.Get_source(), obj))
    while _comm.iprobe(source=MPI.ANY_SOURCE, tag=tag, status=status):
        source = status.Get_source()
        found.append((source, _comm.recv(source=source, tag=tag)))
    return found


def complete_posts() -> None:
    """Wait until every message this rank posted has been received."""
    if _posted:  # only ever filled under plain MPI
        from mpi4py import MPI

        MPI.Request.Waitall(_posted)
        _posted.clear()


def configure_tensorflow() -> None:
    """Size TensorFlow's thread pools and pin a GPU in an ``init_mpi`` process (sampling)."""
    import tensorflow as tf

    _configure_tensorflow(tf, _ctx.threads, _ctx.local_rank)


# ---------------------------------------------------------------- training collectives

@contextlib.contextmanager
def compute_only():
    """Within: the training collectives below (tapes, means, broadcasts) leave tensors on this
    rank, as in a one-rank job; barriers and object collectives still span the job.

    For benchmarks that time a step's compute inside a multi-rank launch, next to the real
    step. Run every call of such a step in here: a ``tf.function`` traced inside keeps no
    collectives, one traced outside keeps them.
    """
    global _local
    _local, before = True, _local
    try:
        yield
    finally:
        _local = before


def _exchanging() -> bool:
    return _hvd is not None and _ctx.size > 1 and not _local


def distributed_tape(tape: Any, name: str, allreduce: AllreduceConfig) -> Any:
    """Wrap a GradientTape so gradients are averaged over ranks, as ``allreduce`` says.

    ``name`` identifies the network (one per tape). Horovod 0.28.1's tape takes no name
    argument: it names each allreduce after its gradient tensor, which is unique within a
    step function, and step functions run one after another, so tapes never collide.
    ``allreduce.fp16`` sends the gradients as float16; unless ``allreduce.overlap``, they
    travel as one group (``groups=1``) after the whole backward pass.
    """
    if _hvd is None or _local:
        return tape
    kind = _hvd.Compression.fp16 if allreduce.fp16 else _hvd.Compression.none
    return _hvd.DistributedGradientTape(tape, op=_hvd.Average, compression=kind,
                                        groups=None if allreduce.overlap else 1)


def broadcast_variables(variables: list, root: int = 0) -> None:
    """Overwrite ``variables`` everywhere with ``root``'s values.

    Called after the first step, when the optimizer's slot variables exist: broadcasting
    before them would leave each rank's Adam moments different.
    """
    if _exchanging():
        _hvd.broadcast_variables(variables, root_rank=root)


def allreduce_mean(value: Any, name: str | None = None) -> Any:
    """Mean over ranks of a tensor or number (metrics are averaged before logging)."""
    if not _exchanging():
        return value
    return _hvd.allreduce(value, op=_hvd.Average, name=name)


def grouped_allreduce_mean(values: list, name: str) -> list:
    """Means over ranks of several tensors, negotiated and fused as one group (as the tapes send gradients)."""
    if not _exchanging():
        return values
    return _hvd.grouped_allreduce(values, op=_hvd.Average, name=name)
