"""This rank's part of each training epoch, in batches: equal for every rank, the same after a resume.

Each epoch the dataset's blocks of ``block`` consecutive samples are shuffled with a seed
shared by all ranks; the shuffled order is cut into ``size`` equal parts, so rank r reads a
disjoint part made of a few contiguous slabs, and every rank gets exactly ``n // size``
samples (the remainder is dropped and reported). Equal counts matter: a rank with one batch
more would wait forever in an allreduce.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from cosmotrain.data.reader import ShardSet
from cosmotrain.errors import UserError

WINDOW_BYTES = 64 * 1024 * 1024  # one read window of rank_batches


def per_rank_count(n: int, size: int, where: str = "the dataset") -> int:
    """Samples each of ``size`` ranks gets from ``n``: equal for all, ``n // size``."""
    if n == 0:
        raise UserError(f"{where} is empty; remake the dataset with more samples, or name another split in the "
                        f"config's data section")
    if n < size:
        raise UserError(f"{where} has {n} samples for {size} ranks; use at most {n} ranks or more data")
    return n // size


def epoch_runs(n: int, rank: int, size: int, seed: int, epoch: int, block: int = 64,
               shuffle: bool = True) -> list[tuple[int, int]]:
    """Contiguous ranges ``(start, stop)`` that rank ``rank`` reads in ``epoch``.

    Blocks of ``block`` samples are permuted with ``(seed, epoch)``, the same on every rank;
    the permuted order is cut into ``size`` equal parts of ``n // size`` samples. The parts
    are disjoint and together cover all but ``n % size`` samples.
    """
    m = per_rank_count(n, size)
    starts = np.arange(0, n, block)
    if shuffle:
        starts = starts[np.random.default_rng([seed, epoch]).permutation(len(starts))]
    lengths = np.minimum(starts + block, n) - starts
    ends = np.cumsum(lengths)  # position in the permuted order where each block ends
    lo, hi = rank * m, (rank + 1) * m
    runs = []
    for s, length, end in zip(starts, lengths, ends):
        begin = end - length
        a, b = max(lo, begin), min(hi, end)
        if a < b:
            runs.append((int(s + a - begin), int(s + b - begin)))
    return runs


def rank_batches(shards: ShardSet, rank: int, size: int, batch: int, seed: int, epoch: int,
                 fields: tuple | None = None, start_batch: int = 0, shuffle: bool = True,
                 window: int = 4096) -> Iterator[dict[str, np.ndarray]]:
    """This rank's batches for ``epoch``: equal count on every rank, deterministic order.

    Reads the rank's slabs a window at a time (at most ``window`` samples and
    ``WINDOW_BYTES``), so memory stays bounded on large datasets. Each sample is read
    straight into its batch (``dealt_rows``, keyed by seed, epoch and rank) and the
    window's batches come in a random order; a batch is a view of its window's arrays.
    ``start_batch`` skips batches already consumed (exact resume) without reading them.
    ``shuffle=False``: slabs and samples in order.
    """
    runs = epoch_runs(shards.n, rank, size, seed, epoch, shuffle=shuffle)
    m = sum(b - a for a, b in runs)
    steps = steps_per_epoch(m, batch, f"{shards.root} ({shards.split} split)")
    sample_bytes = shards.sample_bytes(fields or tuple(shards.schema))
    window = max(batch, min(window, WINDOW_BYTES // max(1, sample_bytes)) // batch * batch)
    rng = np.random.default_rng([seed, epoch, rank, 7])
    for w0 in range(0, steps * batch, window):
        count = (min(w0 + window, steps * batch) - w0) // batch
        order = rng.permutation(count) if shuffle else np.arange(count)
        rows = dealt_rows(count, batch, rng) if shuffle else None
        first = w0 // batch
        if first + count <= start_batch:
            continue
        data = shards.read_runs(_sub_runs(runs, w0, w0 + count * batch), fields, rows, shards.buffers)
        for j in order[max(0, start_batch - first):]:
            yield {k: v[j * batch:(j + 1) * batch] for k, v in data.items()}


def dealt_rows(batches: int, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Row of each reading position in a window of ``batches x batch`` samples.

    The positions form ``batch`` strips of ``batches`` consecutive samples; strip s is
    dealt one sample to every batch, starting at a random batch. Batch j (rows
    ``j*batch ... (j+1)*batch - 1``) so holds one sample of every strip, from a random
    place in it: neighbours on disk never share a batch.
    """
    position = np.arange(batches * batch)
    strip = position // batches
    shift = rng.integers(0, batches, batch)
    return ((position + shift[strip]) % batches) * batch + strip


def split_steps(split: ShardSet, batch: int, size: int) -> int:
    """Full batches of ``batch`` per epoch on each of ``size`` ranks reading ``split``; an error if there are none."""
    where = f"{split.root} ({split.split} split)"
    return steps_per_epoch(per_rank_count(split.n, size, where), batch, where)


def steps_per_epoch(per_rank: int, batch: int, where: str) -> int:
    """Full batches per epoch on each rank; a batch larger than the slice is an error."""
    if batch > per_rank:
        raise UserError(f"per-rank batch {batch} is larger than this rank's {per_rank} samples of {where}; "
                        f"lower the batch size or use fewer ranks")
    return per_rank // batch


def _sub_runs(runs: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The part of ``runs`` between positions ``lo`` and ``hi`` of their concatenation."""
    out, pos = [], 0
    for a, b in runs:
        s, e = max(lo, pos), min(hi, pos + b - a)
        if s < e:
            out.append((a + s - pos, a + e - pos))
        pos += b - a
    return out
