"""P3: aggregate training samples/s of 2 ranks x 1 thread / 2 x (1 rank x 1 thread).

Weak scaling on one node: each rank keeps its per-rank batch, so perfect scaling doubles
the samples per second. Both sides run the real trainer's epoch loop (Horovod gradient
allreduce, in-step agreement, broadcast) on in-memory batches, one intra-op thread per
rank; both sides are launched with ``mpirun`` and the project's launch defaults
(``LAUNCH``: one core per rank), only ``-np`` differs. Launches alternate (3 of each, 1
with ``--quick``) and the ratio compares each side's best launch, as P5 and P7 do: a launch
that other work on the machine disturbed is only ever slower.
Target >= 0.95.

The result also splits the loss into its two causes, from a third kind of launch between
them: two independent 1-rank jobs at once, one pinned to each core (no allreduce, the same
cores busy). ``contention`` = their samples/s ÷ 2 × one rank alone (what sharing the
machine costs: memory bandwidth, caches, clocks); ``communication`` = 2 ranks ÷ the
independent pair (what Horovod's allreduce and agreement cost). ``ratio`` is their product.

``COSMOTRAIN_SCALING_MPIRUN`` replaces the mpirun options (to compare settings), e.g.
``"--bind-to core -x OMPI_MCA_mpi_yield_when_idle=0"``.
"""
from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from cosmotrain import dist

TARGET = 0.95
BATCH = 32
# mpirun options the benchmark (and the demo) launch with: one core per rank, ranks that
# wait for each other by yielding the core instead of spinning on it.
LAUNCH = "--bind-to core --map-by core --mca mpi_yield_when_idle 1"

WORKER = "import sys; from cosmotrain.bench.scaling import worker; worker(*sys.argv[1:])"


def worker(data: str, out: str, steps: str, rounds: str) -> None:
    """One rank of a measurement: prints {"samples_per_s": ...} (all ranks together) on rank 0."""
    from cosmotrain.bench.step import bench_config, memory_batches, prepared_run, quiet_logs, time_trainer_steps

    ctx = dist.init_horovod(threads=1)
    quiet_logs()
    cfg = bench_config(BATCH)
    batches = memory_batches(int(steps), BATCH, seed=1 + ctx.rank)
    run = prepared_run(cfg, Path(data), Path(out))
    time_trainer_steps(run, batches[:10])  # trace, first-step broadcast, Horovod warm-up
    per_step = statistics.median(time_trainer_steps(run, batches)[0] for _ in range(int(rounds)))
    if ctx.is_root:
        print(json.dumps({"samples_per_s": ctx.size * BATCH / per_step, "step_ms": 1e3 * per_step,
                          "threads": ctx.threads, "engine": ctx.engine}), flush=True)


def measure(ranks: int, data: Path, out: Path, steps: int, rounds: int, options: str,
            core: int | None = None) -> subprocess.Popen:
    """Start ``ranks`` workers with mpirun and ``options`` (``core``: the job pinned to that core).

    The 1-rank side goes through the same launcher and binding as the 2-rank side, so it
    gets one core too: a plain process could spill its helper threads onto the idle core
    and make the baseline look better than one rank's share of a node.
    """
    pin = [] if core is None else ["taskset", "-c", str(core)]
    cmd = [*pin, "mpirun", "-np", str(ranks), *shlex.split(options),
           sys.executable, "-c", WORKER, str(data), str(out), str(steps), str(rounds)]
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def result(launch: subprocess.Popen) -> dict:
    """The worker's JSON line, once its launch has ended."""
    try:
        out, err = launch.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        launch.kill()
        raise RuntimeError(f"scaling worker took over 15 minutes ({' '.join(launch.args[:6])} ...)")
    if launch.returncode != 0:
        raise RuntimeError(f"scaling worker failed ({' '.join(launch.args[:6])} ...):\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def independent_pair(data: Path, out: Path, steps: int, rounds: int) -> dict:
    """Two 1-rank jobs at once, one on each core: their samples/s together, their slower step."""
    both = [result(launch) for launch in [measure(1, data, out / f"core{core}", steps, rounds, "--bind-to none", core)
                                          for core in (0, 1)]]
    return {"samples_per_s": sum(m["samples_per_s"] for m in both), "step_ms": max(m["step_ms"] for m in both)}


def run(args) -> dict:
    from cosmotrain.bench.step import write_bench_dataset

    steps, rounds, repeats = (30, 2, 1) if args.quick else (60, 5, 3)
    options = os.environ.get("COSMOTRAIN_SCALING_MPIRUN", LAUNCH)
    one, pair, two = [], [], []
    with tempfile.TemporaryDirectory(prefix="cosmotrain-bench-") as tmp:
        data = write_bench_dataset(Path(tmp) / "data", n_train=4 * BATCH)
        for r in range(repeats):
            one.append(result(measure(1, data, Path(tmp) / f"one-{r}", steps, rounds, options)))
            pair.append(independent_pair(data, Path(tmp) / f"pair-{r}", steps, rounds))
            two.append(result(measure(2, data, Path(tmp) / f"two-{r}", steps, rounds, options)))
    single, independent, double = (max(launches, key=lambda m: m["samples_per_s"]) for launches in (one, pair, two))
    return {"ratio": round(double["samples_per_s"] / (2 * single["samples_per_s"]), 4), "target": TARGET,
            "contention": round(independent["samples_per_s"] / (2 * single["samples_per_s"]), 4),
            "communication": round(double["samples_per_s"] / independent["samples_per_s"], 4),
            "one_rank_samples_per_s": round(single["samples_per_s"], 1),
            "two_ranks_samples_per_s": round(double["samples_per_s"], 1),
            "independent_pair_samples_per_s": round(independent["samples_per_s"], 1),
            "one_rank_step_ms": round(single["step_ms"], 3), "two_ranks_step_ms": round(double["step_ms"], 3),
            "independent_pair_step_ms": round(independent["step_ms"], 3),
            "launches_samples_per_s": {"one": [round(m["samples_per_s"], 1) for m in one],
                                       "independent_pair": [round(m["samples_per_s"], 1) for m in pair],
                                       "two": [round(m["samples_per_s"], 1) for m in two]},
            "per_rank_batch": BATCH, "threads_per_rank": 1, "engine": two[0]["engine"],
            "mpirun_options": options, "launches": repeats}
