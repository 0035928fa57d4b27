"""P1: samples/s of the training input pipeline / samples/s of raw contiguous h5py reads.

Both read the same bytes (``images`` and ``labels`` of every sample of a 16-shard galaxies
split, from the page cache after a first pass): the raw side with ``h5py`` slicing whole
contiguous slabs of each shard, the pipeline side exactly as a training rank does
(``feed.batches``: block-shuffled slabs, each sample read straight into its batch, batches
of ``BATCH`` read ahead in a thread). Rounds alternate; the ratio compares each side's best round (as
``timeit`` does: a disturbed round is only ever slower), the median of the per-round
ratios is printed beside it. Target >= 0.95.
``ratio_batch_256`` repeats the pipeline with larger batches, to separate per-batch
overhead from reading; ``tf_data_ratio`` reads the same batches through ``feed.dataset``
(a ``tf.data.Dataset``), to show what ``from_generator`` costs on top.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from cosmotrain.data import feed
from cosmotrain.data.reader import ShardSet

TARGET = 0.95
BATCH = 32
SLAB = 4096  # samples per raw read (the pipeline's read window)
FIELDS = ("images", "labels")


def raw_read(root: Path) -> float:
    """Samples/s of reading every shard's fields in contiguous slabs with h5py."""
    import h5py

    start, n = time.perf_counter(), 0
    for path in sorted(root.glob("train-*.h5")):
        with h5py.File(path, "r") as h5:
            total = h5["labels"].shape[0]
            for a in range(0, total, SLAB):
                for field in FIELDS:
                    h5[field][a:a + SLAB]
                n += min(SLAB, total - a)
    return n / (time.perf_counter() - start)


def pipeline_read(split: ShardSet, epoch: int, batch: int, source=feed.batches) -> float:
    """Samples/s of iterating one epoch of ``feed.batches`` (or ``feed.dataset``) on one rank.

    ``split`` stays open across epochs, as in training: opening and validating the shards
    is a once-per-run cost, not a per-epoch one.
    """
    start, n = time.perf_counter(), 0
    for images, labels in source(split, 0, 1, batch, seed=0, epoch=epoch, fields=FIELDS):
        n += int(labels.shape[0])
    return n / (time.perf_counter() - start)


def run(args) -> dict:
    from cosmotrain import dist
    from cosmotrain.bench.step import write_bench_dataset
    from cosmotrain.train.loop import freeze_garbage

    dist.init_horovod()
    n, rounds = (4096, 3) if args.quick else (32768, 9)
    with tempfile.TemporaryDirectory(prefix="cosmotrain-bench-") as tmp:
        root = write_bench_dataset(Path(tmp) / "data", n_train=n)
        split = ShardSet(root, "train")
        raw_read(root), pipeline_read(split, 0, BATCH)  # warm the page cache
        freeze_garbage()  # as the trainers do before their loop
        pairs = [(pipeline_read(split, r, BATCH), raw_read(root)) for r in range(rounds)]
        big = max(pipeline_read(split, r, 256) for r in range(max(1, rounds // 2)))
        tf_data = max(pipeline_read(split, r, BATCH, feed.dataset) for r in range(max(1, rounds // 2)))
        split.close()
    raw = max(r for _, r in pairs)
    return {"ratio": round(max(p for p, _ in pairs) / raw, 4), "target": TARGET,
            "median_ratio": round(statistics.median(p / r for p, r in pairs), 4),
            "pipeline_samples_per_s": round(max(p for p, _ in pairs), 1),
            "raw_h5py_samples_per_s": round(raw, 1), "ratio_batch_256": round(big / raw, 4),
            "tf_data_ratio": round(tf_data / raw, 4),
            "batch": BATCH, "samples": n, "bytes_per_sample": 64 * 64 * 3 + 1, "shards": -(-n // 2048),
            "ratios_per_round": [round(p / r, 4) for p, r in pairs]}
