"""P4: the trainer's step time reading the real HDF5 pipeline / reading in-memory batches, 1 rank.

Same trainer, same model, same number of steps (augmentation included: it runs inside the
step); only the source of the batches differs: the sharded HDF5 reader exactly as training
uses it (``Run.pipeline``: block-shuffled slabs, in-window shuffle, read ahead in a thread)
against pre-made tensors. Rounds alternate, each over a fresh epoch; the ratio compares
the two sides' best rounds (``step.ratio_figures``), the median of the per-round ratios is
printed beside it. Target <= 1.02. ``cpu_ratio`` is the same with process CPU time.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from cosmotrain import dist
from cosmotrain.bench.step import (bench_config, memory_batches, prepared_run, quiet_logs, ratio_figures,
                                   time_trainer_steps, write_bench_dataset)

TARGET = 1.02


def run(args) -> dict:
    dist.init_horovod()
    quiet_logs()
    steps, rounds = (30, 3) if args.quick else (100, 9)
    cfg = bench_config(batch=32)
    memory = memory_batches(steps, cfg.train.batch_size)
    with tempfile.TemporaryDirectory(prefix="cosmotrain-bench-") as tmp:
        data = write_bench_dataset(Path(tmp) / "data", n_train=cfg.train.batch_size * steps)
        trainer_run = prepared_run(cfg, data, Path(tmp) / "run")
        time_trainer_steps(trainer_run, memory)  # trace and broadcast once
        pairs = [(time_trainer_steps(trainer_run, trainer_run.pipeline(epoch), epoch),
                  time_trainer_steps(trainer_run, memory)) for epoch in range(rounds)]
    return {**ratio_figures(pairs, "hdf5", "memory"), "target": TARGET, "steps_per_round": steps,
            "batch": cfg.train.batch_size, "image": 64, "threads": dist.context().threads}
