"""Where this process stands before MPI starts: its rank and node as the launcher announced them,
the cores it may use, the thread counts that follow, and how N items are shared out.

Pure functions of the environment (``mpirun``, ``srun``, ``horovodrun`` and SLURM variables,
the affinity mask): no MPI or Horovod call, so they are safe to use before either starts.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

# Environment variables that hold the rank / local size under each launcher we support.
_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "HOROVOD_RANK", "SLURM_PROCID", "PMI_RANK")
_LOCAL_SIZE_VARS = ("OMPI_COMM_WORLD_LOCAL_SIZE", "HOROVOD_LOCAL_SIZE", "MPI_LOCALNRANKS")
# Open MPI's TCP transport sends messages up to this size eagerly (no rendezvous handshake).
TCP_EAGER_LIMIT = 64 * 2 ** 20

def env_rank() -> int:
    """This process's rank as the launcher announced it, before any MPI call."""
    for var in _RANK_VARS:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def env_local_size() -> int:
    """How many ranks share this node, read from the launcher's environment."""
    for var in _LOCAL_SIZE_VARS:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return slurm_tasks_on_node() or 1


def slurm_tasks_on_node() -> int | None:
    """Tasks SLURM placed on this node (``SLURM_STEP_TASKS_PER_NODE`` at ``SLURM_NODEID``), or None.

    SLURM writes the counts compressed: ``"2(x3),1"`` is 2, 2, 2, 1 tasks on nodes 0..3.
    """
    text = os.environ.get("SLURM_STEP_TASKS_PER_NODE") or os.environ.get("SLURM_TASKS_PER_NODE", "")
    counts: list[int] = []
    for part in filter(None, text.split(",")):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part)
        if match is None:
            return None
        counts += [int(match[1])] * int(match[2] or 1)
    node = os.environ.get("SLURM_NODEID", "0")
    return counts[int(node)] if node.isdigit() and int(node) < len(counts) else None


def cores_per_rank(local_size: int) -> int:
    """CPU cores this rank may use, as SLURM allocated them, else as its affinity mask allows.

    In order: ``SLURM_CPUS_PER_TASK``; else the CPUs SLURM gave this node
    (``SLURM_CPUS_ON_NODE``) divided by the ranks on it (``local_size``); else the affinity
    mask, shared out among the node's ranks when it is the whole machine (an unbound rank).
    Never more than the mask: a rank bound to one core gets one thread whatever SLURM says.
    SLURM's ``task/none`` plugin leaves the mask whole, so without this a rank given one CPU
    would still size TensorFlow for every core of the node.
    """
    mask = len(os.sched_getaffinity(0))
    allocated = _slurm_cores(local_size)
    if allocated:
        return max(1, min(allocated, mask))
    if mask >= (os.cpu_count() or mask) and local_size > 1:
        mask //= local_size
    return max(1, mask)


def _slurm_cores(local_size: int) -> int | None:
    """Cores per rank from SLURM's allocation, or None outside a SLURM job."""
    per_task = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if per_task.isdigit() and int(per_task) > 0:
        return int(per_task)
    on_node = os.environ.get("SLURM_CPUS_ON_NODE", "")
    if on_node.isdigit() and int(on_node) > 0:
        return max(1, int(on_node) // max(1, local_size))
    return None


def set_thread_env(threads: int) -> None:
    """Set OpenMP/BLAS thread counts; call before numerical libraries load."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))


def set_mpi_env() -> None:
    """Open MPI defaults for ranks that share cores; call before MPI starts.

    A rank waiting in a collective yields its core (``sched_yield``) instead of spinning on
    it, so a waiting rank does not starve its own compute threads, Horovod's background
    thread or a neighbour on an oversubscribed node (``cosmotrain bench scaling``). Yielding
    an otherwise idle core costs nothing. Export the variable as 0 to spin.

    Allreduces of 512 KB and more on 3 or more ranks use the ring (``ompi_rules.conf``,
    an Open MPI dynamic rules file; below, and on 2 ranks, Open MPI's own choice): Open MPI
    4.1's fixed choice for them moved 1.5× the ring's bytes (4 nodes, 200 Mbit/s links:
    1 MB in 117 ms against the ring's 76 ms; ``cosmotrain bench allreduce``). Setting
    ``OMPI_MCA_coll_tuned_use_dynamic_rules`` yourself keeps your choice.

    Over TCP, messages up to ``TCP_EAGER_LIMIT`` go eagerly (``OMPI_MCA_btl_tcp_eager_limit``;
    Open MPI's default is 64 KB). Above its eager limit Open MPI waits for the receiver's
    clear-to-send, and where two ranks exchange data both ways (2 ranks; the pairwise
    steps of recursive doubling) that reply queues behind the receiver's own bulk data in
    the same TCP stream: measured on 2 nodes at 50 Mbit/s, back-to-back 1 MiB allreduces
    took 324 ms instead of 185 (mpi4py), and the classifier's step 324–358 ms instead of
    211. The cost is address space (Open MPI keeps 8 eager buffers of this size per rank:
    +0.5 GB virtual) and ~17 MB resident after 64 MiB allreduces. Export the variable to
    choose your own.
    """
    os.environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
    os.environ.setdefault("OMPI_MCA_btl_tcp_eager_limit", str(TCP_EAGER_LIMIT))
    if "OMPI_MCA_coll_tuned_use_dynamic_rules" not in os.environ:
        os.environ["OMPI_MCA_coll_tuned_use_dynamic_rules"] = "1"
        os.environ["OMPI_MCA_coll_tuned_dynamic_rules_filename"] = str(Path(__file__).with_name("ompi_rules.conf"))


def split_range(n: int, rank: int, size: int, align: int = 1) -> tuple[int, int]:
    """Part ``rank`` of ``size`` of the items 0..n-1: a contiguous range [start, stop).

    Cut at multiples of ``align`` (whole blocks), in rank order, disjoint, covering all ``n``;
    the parts' sizes differ by at most one block.
    """
    units = -(-n // align)
    lo, hi = units * rank // size, units * (rank + 1) // size
    return min(n, lo * align), min(n, hi * align)
