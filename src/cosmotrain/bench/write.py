"""P6: per-rank HDF5 part writes ÷ raw NumPy writes of the same bytes to the same disk (target ≥ 0.9).

Two ranks write at the same time, each its own file, as in a sampling job, 256 MiB each
(64 with --quick) of 64×64 float32 patches already in memory, in batches of 64 (1 MiB):

* HDF5: the engine's part writer (``sampleset.write_part``: create the part, write it batch
  by batch, flush to disk, mark the batches done);
* raw: ``ndarray.tofile`` of the same batches into a plain file, then fsync; this is the
  ratio's baseline, the same bytes in the same pieces without HDF5;
* raw, one write: ``ndarray.tofile`` of the whole array at once, then fsync; reported as
  ``ratio_vs_one_write`` (what batching costs, whatever the format).

Each is timed 6 times (the order rotates) and the best time of the slower rank is used,
which resists other load on a shared machine. Then one whole sample set is made from the
same samples (``sampleset.produce``: parts, hashing, virtual dataset, manifest) to report the
virtual-dataset assembly time ÷ the set's production time (target ≤ 2 %). Files go to a
temporary folder next to the results (the disk the user chose) and are removed.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from cosmotrain.bench.sample_scaling import launch

WORKER = "from cosmotrain.bench.write import worker; worker()"
SIDE, BATCH, REPEATS = 64, 64, 6
WRITES = ("hdf5", "raw", "raw_one_write")


def run(args) -> dict:
    megabytes = 64 if args.quick else 256
    scratch = Path(args.results)
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".write-", dir=scratch) as tmp:
        seconds = launch(WORKER, 2, tmp, megabytes)
    return {
        "ratio": seconds["raw"] / seconds["hdf5"], "target": 0.9,
        "ratio_vs_one_write": seconds["raw_one_write"] / seconds["hdf5"],
        **{f"{name}_mb_per_second_per_rank": megabytes / seconds[name] for name in WRITES},
        "assembly_fraction": seconds["assemble"] / seconds["produce"], "assembly_target": 0.02,
        "assemble_seconds": seconds["assemble"], "produce_seconds": seconds["produce"],
        "megabytes_per_rank": megabytes, "ranks": 2, "batch": BATCH, "repeats": REPEATS,
    }


def worker() -> None:
    """One rank: argv = DIR MEGABYTES; rank 0 prints the seconds as JSON."""
    import numpy as np

    from cosmotrain import dist, sampleset

    folder, megabytes = Path(sys.argv[1]), int(sys.argv[2])
    ctx = dist.init_mpi(threads=1)
    rows = megabytes * 2**20 // (SIDE * SIDE * 4)
    data = np.random.default_rng(ctx.rank).standard_normal((rows, SIDE, SIDE), dtype=np.float32)
    spec = sampleset.Spec("bench-write", rows * ctx.size, BATCH, {"patches": ("float32", (SIDE, SIDE))},
                          identity={"bench": "write"})
    writes = {"hdf5": lambda path: _hdf5(path, spec, rows * ctx.rank, data),
              "raw": lambda path: _raw(path, [data[a:a + BATCH] for a in range(0, rows, BATCH)]),
              "raw_one_write": lambda path: _raw(path, [data])}
    times: dict[str, list] = {name: [] for name in WRITES}
    for repeat in range(REPEATS):
        for i in range(len(WRITES)):
            name = WRITES[(i + repeat) % len(WRITES)]  # rotate the order: the disk's state drifts
            times[name].append(_timed(writes[name], folder / f"{name}-{ctx.rank}"))
    whole = sampleset.produce(folder / "set", spec, lambda a, b: {"patches": data[a % rows:a % rows + b - a]})
    slowest = dist.gather_object({name: min(t) for name, t in times.items()})
    if ctx.is_root:
        seconds = {name: max(rank[name] for rank in slowest) for name in WRITES}
        seconds.update(assemble=whole["timing"]["assemble_seconds"], produce=whole["timing"]["total_seconds"])
        print(json.dumps(seconds))


def _timed(write, path: Path) -> float:
    """Seconds ``write(path)`` takes, all ranks starting together; the file is removed after."""
    from cosmotrain import dist

    dist.barrier()
    began = time.perf_counter()
    write(path)
    seconds = time.perf_counter() - began
    path.unlink()
    return seconds


def _raw(path: Path, pieces) -> None:
    with open(path, "wb") as fh:
        for piece in pieces:
            piece.tofile(fh)
        fh.flush()
        os.fsync(fh.fileno())


def _hdf5(path: Path, spec, start: int, data) -> None:
    from cosmotrain import sampleset

    stop = start + len(data)
    batches = list(range(-(-len(data) // spec.batch)))
    sampleset.write_part(path, spec, (start, stop), batches, lambda a, b: {"patches": data[a - start:b - start]})
