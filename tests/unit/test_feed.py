"""Feeding the step: per-rank batches read ahead in a thread, as the trainers iterate them."""
import sys
import threading
import time
import weakref

import numpy as np
import pytest

from cosmotrain.data import augment, epochs, feed, reader
from cosmotrain.errors import UserError


def test_batches_are_rank_batches_with_each_sample_under_a_d4_element(tiny_galaxies):
    s = reader.ShardSet(tiny_galaxies, "train")
    got = list(feed.batches(s, 0, 2, 8, seed=5, epoch=1, fields=("images", "labels", "ids"), augment="images"))
    ref = list(epochs.rank_batches(s, 0, 2, 8, seed=5, epoch=1, fields=("images", "labels", "ids")))
    assert len(got) == len(ref) == 51 // 8
    for (images, labels, ids), r in zip(got, ref):
        np.testing.assert_array_equal(ids, r["ids"])
        np.testing.assert_array_equal(labels, r["labels"])
        assert images.dtype == np.uint8 and images.shape == (8, 8, 8, 3)
        views = [{augment.d4_transform(r["images"][i:i + 1], np.array([k])).tobytes() for k in range(8)}
                 for i in range(8)]
        assert all(images[i].tobytes() in views[i] for i in range(8))
    assert any(not np.array_equal(g[0], r["images"]) for g, r in zip(got, ref))  # augmented


def test_resumed_batches_are_the_tail_of_the_epoch(tiny_galaxies):
    s = reader.ShardSet(tiny_galaxies, "train")
    full = list(feed.batches(s, 1, 2, 8, seed=3, epoch=2, fields=("images", "ids"), augment="images"))
    tail = list(feed.batches(s, 1, 2, 8, seed=3, epoch=2, fields=("images", "ids"), start_batch=4, augment="images"))
    assert len(tail) == len(full) - 4
    for (a_img, a_ids), (b_img, b_ids) in zip(full[4:], tail):
        assert np.array_equal(a_ids, b_ids) and np.array_equal(a_img, b_img)


def test_a_splits_read_windows_serve_the_next_epoch_only_once_released(tiny_galaxies):
    s = reader.ShardSet(tiny_galaxies, "train")

    def epoch(e):
        return list(epochs.rank_batches(s, 0, 1, 8, seed=1, epoch=e, fields=("images", "ids")))

    held = epoch(0)
    ids = [b["ids"].copy() for b in held]
    other = epoch(1)  # epoch 0's batches are still held: its window must not be refilled
    assert other[0]["images"].base is not held[0]["images"].base
    assert all(np.array_equal(b["ids"], i) for b, i in zip(held, ids))
    window = weakref.ref(held[0]["images"].base)
    del held
    assert epoch(2)[0]["images"].base is window()  # released: the next epoch reads into the same memory


def test_as_tensor_uses_an_aligned_batchs_memory_and_copies_any_other():
    window = reader.aligned_empty((4, 8, 8, 3), np.uint8)
    window[:] = np.arange(window.size, dtype=np.uint8).reshape(window.shape)
    before = window.copy()
    shared, copied = feed.as_tensor(window[2:4]), feed.as_tensor(window.reshape(-1)[3:100])
    window += 1  # seen through the tensor that uses the memory, not through the copy
    np.testing.assert_array_equal(shared.numpy(), window[2:4])
    np.testing.assert_array_equal(copied.numpy(), before.reshape(-1)[3:100])


def test_tensors_of_an_epoch_keep_their_window_from_being_refilled(tiny_galaxies):
    s = reader.ShardSet(tiny_galaxies, "train")

    def epoch(e):
        return list(feed.batches(s, 0, 1, 8, seed=1, epoch=e, fields=("images", "ids"), convert=feed.as_tensor))

    first = epoch(0)
    expected = [[t.numpy().copy() for t in batch] for batch in first]
    second = epoch(1)
    assert any(not np.array_equal(a[1].numpy(), b[1]) for a, b in zip(second, expected))  # another order
    assert all(np.array_equal(t.numpy(), x) for batch, want in zip(first, expected) for t, x in zip(batch, want))


def test_the_tf_data_dataset_gives_the_same_batches(tiny_galaxies):
    s = reader.ShardSet(tiny_galaxies, "train")
    fields = ("images", "labels")
    direct = list(feed.batches(s, 1, 2, 8, seed=2, epoch=0, fields=fields, augment="images"))
    ds = feed.dataset(s, 1, 2, 8, seed=2, epoch=0, fields=fields, augment="images")
    through = list(ds.as_numpy_iterator())
    assert len(through) == len(direct) == 51 // 8
    assert all(np.array_equal(a, b) for d, t in zip(direct, through) for a, b in zip(d, t))


def test_prefetch_yields_everything_in_order_and_raises_the_readers_error():
    assert list(feed.prefetch(range(50), depth=2)) == list(range(50))

    def broken():
        yield 1
        raise UserError("shard x.h5 is missing")

    got = []
    with pytest.raises(UserError, match="x.h5"):
        for item in feed.prefetch(broken()):
            got.append(item)
    assert got == [1]


def test_leaving_a_prefetch_loop_early_stops_its_thread():
    stream = feed.prefetch(iter(range(10**6)), depth=2)
    assert next(stream) == 0
    stream.close()
    deadline = time.monotonic() + 5
    while any(t.name == "prefetch" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "prefetch thread still running"
        time.sleep(0.05)


def test_reading_threads_shorten_the_gil_slices_only_while_they_run():
    """The step must not wait 5 ms for the GIL between batches; the rest of the program keeps Python's slices."""
    before = sys.getswitchinterval()
    first, second = feed.prefetch(iter(range(10)), depth=2), feed.prefetch(iter(range(10)), depth=2)
    next(first), next(second)
    assert sys.getswitchinterval() == min(feed.SWITCH_INTERVAL, before)
    first.close()
    assert sys.getswitchinterval() == min(feed.SWITCH_INTERVAL, before)  # the second still reads
    assert list(second) == list(range(1, 10))
    assert sys.getswitchinterval() == before
