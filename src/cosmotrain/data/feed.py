"""Feeding a training step: this rank's batches, read ahead in a background thread.

``batches`` is what the trainers iterate: ``epochs.rank_batches`` (equal disjoint per-rank
slices, per-epoch shuffle, exact-resume positions), optionally under a random D4 element
per sample keyed by (seed, epoch, rank, batch index), through ``prefetch``. Reading
(``os.preadv``, which releases the GIL) then overlaps the step, which releases it too.
A plain thread costs about half the CPU per batch of ``tf.data``'s ``from_generator``,
which matters when the input shares the rank's cores with the step (``bench input``).
While a reading thread runs, the GIL changes hands every ``SWITCH_INTERVAL`` instead of
Python's 5 ms: between two steps the training loop needs the GIL to start the next one,
and the reading thread, which gives it up only for a few microseconds at a time, kept it
for up to 5 ms (the step with the HDF5 pipeline took 1.06-1.07x the in-memory one; with
0.5 ms slices 1.01-1.03).
"""
from __future__ import annotations

import contextlib
import queue
import sys
import threading
from typing import Callable, Iterable, Iterator

import numpy as np

from cosmotrain.data.augment import d4_transform
from cosmotrain.data.epochs import rank_batches
from cosmotrain.data.reader import ALIGN, ShardSet

GROUP_BYTES = 16 * 2 ** 20  # bytes of batches per handover from the reading thread
SWITCH_INTERVAL = 5e-4  # s: the longest the reading thread holds the GIL while the step waits for it


def batches(shards: ShardSet, rank: int, size: int, batch: int, seed: int, epoch: int,
            fields: tuple, start_batch: int = 0, augment: str | None = None,
            convert: Callable | None = None, depth: int = 3) -> Iterator[tuple]:
    """This rank's batches of ``epoch`` from ``start_batch`` on, as tuples in ``fields`` order.

    ``augment`` names an image field to put under a random D4 element per sample; the
    randomness is keyed by the batch's index in the epoch, so a resumed run sees exactly
    the batches an uninterrupted one would have. ``convert`` (e.g. ``as_tensor``,
    ``tf.convert_to_tensor``) is applied to every array in the reading thread, so the
    step receives ready tensors. The thread hands batches over in groups of up to
    ``GROUP_BYTES`` (at least one batch; up to ``depth`` groups ahead). Each handover wakes
    the consuming thread, which on a busy virtual machine took tens of microseconds: one
    handover per batch cost ``bench pipeline`` 25 % of its reads, groups of 8 batches
    10-15 %, of 32 or more 0-3 %.
    """
    stream = rank_batches(shards, rank, size, batch, seed, epoch, fields, start_batch)

    def tuples():
        for index, data in enumerate(stream, start=start_batch):
            if augment:
                k = np.random.default_rng([seed, epoch, rank, index, 13]).integers(0, 8, batch)
                data[augment] = d4_transform(data[augment], k)
            yield tuple(convert(data[f]) if convert else data[f] for f in fields)

    per_handover = max(1, GROUP_BYTES // max(1, batch * shards.sample_bytes(fields)))
    for group in prefetch(_groups(tuples(), per_handover), depth):
        yield from group


def as_tensor(array: np.ndarray):
    """A TensorFlow tensor of ``array`` for ``batches(convert=...)``: its memory as it is when it can.

    A batch read by ``batches`` is a view of a window that is reused only once nothing
    refers to it (``reader.Buffers``); a tensor made through DLPack refers to it until the
    tensor is gone, so TensorFlow can read the batch where it lies. That needs the data
    ``reader.ALIGN``-aligned (every batch of a window of 64-byte samples is); other
    arrays are copied (``tf.convert_to_tensor``). A copy cost the reading thread half its
    time per batch and the step 1-2 % (``bench input``).
    """
    import tensorflow as tf

    if array.flags.c_contiguous and array.ctypes.data % ALIGN == 0:
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    return tf.convert_to_tensor(array)


def _groups(items: Iterator, size: int) -> Iterator[list]:
    """``items`` in lists of ``size`` (the last may be shorter)."""
    group = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def dataset(shards: ShardSet, rank: int, size: int, batch: int, seed: int, epoch: int,
            fields: tuple, start_batch: int = 0, augment: str | None = None):
    """The same batches as ``batches``, as a ``tf.data.Dataset`` (for Keras ``fit`` and the like).

    Reading still runs in ``batches``' thread; ``from_generator`` adds its own cost per
    batch (``bench pipeline`` prints it as ``tf_data_ratio``), which is why the trainers
    iterate ``batches`` directly.
    """
    import tensorflow as tf

    signature = tuple(tf.TensorSpec((batch,) + shards.sample_shape(f), shards.schema[f].dtype) for f in fields)
    return tf.data.Dataset.from_generator(
        lambda: batches(shards, rank, size, batch, seed, epoch, fields, start_batch, augment),
        output_signature=signature)


def prefetch(iterable: Iterable, depth: int = 3) -> Iterator:
    """Iterate ``iterable`` in a background thread, up to ``depth`` items ahead.

    An exception in the thread is raised here; closing the returned generator (e.g.
    leaving the loop early) stops the thread.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(iter(iterable), items, stop), daemon=True, name="prefetch")
    with _short_gil_slices():
        thread.start()
        try:
            while True:
                more, item = items.get()
                if not more:
                    if item is not None:
                        raise item
                    return
                yield item
        finally:
            stop.set()


_slices = {"readers": 0, "interval": None}
_slices_lock = threading.Lock()


@contextlib.contextmanager
def _short_gil_slices():
    """``SWITCH_INTERVAL`` GIL slices while any reading thread runs; Python's own again after the last."""
    with _slices_lock:
        if _slices["readers"] == 0:
            _slices["interval"] = sys.getswitchinterval()
            sys.setswitchinterval(min(SWITCH_INTERVAL, _slices["interval"]))
        _slices["readers"] += 1
    try:
        yield
    finally:
        with _slices_lock:
            _slices["readers"] -= 1
            if _slices["readers"] == 0:
                sys.setswitchinterval(_slices["interval"])


def _produce(source: Iterator, items: queue.Queue, stop: threading.Event) -> None:
    try:
        for item in source:
            if not _offer(items, (True, item), stop):
                return
        _offer(items, (False, None), stop)
    except BaseException as err:  # handed to the consumer, raised there
        _offer(items, (False, err), stop)


def _offer(items: queue.Queue, item: tuple, stop: threading.Event) -> bool:
    """Put ``item`` unless the consumer has gone; False if it has."""
    while not stop.is_set():
        try:
            items.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
