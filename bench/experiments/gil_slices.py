"""P4's two sides with the reading thread's GIL slices at 5 ms (Python's own) and 0.5 ms.

    python bench/experiments/gil_slices.py [ROUNDS]

The classifier trainer's step over the HDF5 pipeline with ``feed.SWITCH_INTERVAL`` 5 ms,
then 0.5 ms, then over in-memory batches, alternating for ROUNDS (default 12) rounds of
100 steps in one process, as ``cosmotrain bench input`` does; prints each side's best and
median ms per step and their ratios to the in-memory side. About 2 minutes on 2 cores.
Figures in bench/README.md (P4).
"""
import statistics
import sys
import tempfile
from pathlib import Path

from cosmotrain import dist
from cosmotrain.bench.step import (bench_config, memory_batches, prepared_run, quiet_logs, time_trainer_steps,
                                   write_bench_dataset)
from cosmotrain.data import feed

STEPS = 100
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 12

dist.init_horovod()
quiet_logs()
cfg = bench_config(batch=32)
memory = memory_batches(STEPS, cfg.train.batch_size)
times: dict = {"hdf5, 5 ms": [], "hdf5, 0.5 ms": [], "memory": []}
with tempfile.TemporaryDirectory() as tmp:
    data = write_bench_dataset(Path(tmp) / "data", n_train=cfg.train.batch_size * STEPS)
    run = prepared_run(cfg, data, Path(tmp) / "run")
    time_trainer_steps(run, memory)
    time_trainer_steps(run, run.pipeline(0), 0)
    for epoch in range(1, ROUNDS + 1):
        for name, interval in (("hdf5, 5 ms", 5e-3), ("hdf5, 0.5 ms", 5e-4)):
            feed.SWITCH_INTERVAL = interval
            times[name].append(time_trainer_steps(run, run.pipeline(epoch), epoch)[0])
        times["memory"].append(time_trainer_steps(run, memory)[0])
best, median = min(times["memory"]), statistics.median(times["memory"])
for name, t in times.items():
    print(f"{name:13s} best {1e3 * min(t):6.2f} ms ({min(t) / best:.3f}), "
          f"median {1e3 * statistics.median(t):6.2f} ms ({statistics.median(t) / median:.3f})")
