"""Sharded HDF5 datasets: round trip, validation of bad input, per-rank epoch slicing."""
import json
import os

import h5py
import numpy as np
import pytest

from cosmotrain.data import augment, epochs, h5raw, reader, shards
from cosmotrain.errors import UserError
from testlib import cmb_fields, resign, set_values


def test_round_trip_names_chunks_and_manifest(tiny_galaxies):
    manifest = json.loads((tiny_galaxies / "manifest.json").read_text())
    files = sorted(p.name for p in tiny_galaxies.glob("*.h5"))
    assert files == ["train-00000-of-00003.h5", "train-00001-of-00003.h5", "train-00002-of-00003.h5",
                     "val-00000-of-00001.h5"]
    assert manifest["splits"]["train"]["n"] == 103 and manifest["seed"] == 0
    assert manifest["config"] == {"n": 113} and "numpy" in manifest["versions"]
    with h5py.File(tiny_galaxies / files[0]) as h5:
        chunks = h5["images"].chunks  # chunked along N only: a rank reads whole samples
        assert chunks[1:] == h5["images"].shape[1:] and chunks[0] * 8 * 8 * 3 <= shards.CHUNK_BYTES
        assert list(h5.attrs["class_names"]) == ["round", "edge-on", "spiral"]
    s = reader.ShardSet(tiny_galaxies, "train", kind="galaxies", verify=True)
    ids = s.read(30, 90)["ids"]  # spans two files
    np.testing.assert_array_equal(ids, np.arange(30, 90))
    assert s.read(0, 103)["images"].shape == (103, 8, 8, 3)


def test_checksum_mismatch_is_caught(tiny_galaxies):
    with h5py.File(tiny_galaxies / "val-00000-of-00001.h5", "a") as h5:
        h5["labels"][0] = 2
    reader.ShardSet(tiny_galaxies, "val", verify=False)  # without verification it opens
    with pytest.raises(UserError, match="shard .*val-00000-of-00001.h5 does not match its sha256"):
        reader.ShardSet(tiny_galaxies, "val")


def _edit_manifest(root, fn):
    m = json.loads((root / "manifest.json").read_text())
    fn(m)
    (root / "manifest.json").write_text(json.dumps(m))


def test_wrong_schema_version_kind_and_split(tiny_galaxies):
    with pytest.raises(UserError, match="needs 'cmb'"):
        reader.ShardSet(tiny_galaxies, "train", kind="cmb")
    with pytest.raises(UserError, match="no 'test' split"):
        reader.ShardSet(tiny_galaxies, "test")
    _edit_manifest(tiny_galaxies, lambda m: m.update(schema_version=99))
    with pytest.raises(UserError, match="schema version 99"):
        reader.ShardSet(tiny_galaxies, "train")


def test_missing_unreadable_and_wrong_dtype_files(tiny_galaxies, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        reader.ShardSet(tmp_path / "nowhere")
    (tiny_galaxies / "val-00000-of-00001.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(UserError, match="val-00000-of-00001.h5 is 15 bytes, the manifest says"):
        reader.ShardSet(tiny_galaxies, "val")
    resign(tiny_galaxies)
    with pytest.raises(UserError, match="cannot read HDF5 file"):
        reader.ShardSet(tiny_galaxies, "val")
    path = tiny_galaxies / "train-00001-of-00003.h5"
    with h5py.File(path, "a") as h5:
        data = h5["images"][:].astype(np.float32)
        del h5["images"]
        h5["images"] = data
    resign(tiny_galaxies)
    with pytest.raises(UserError, match="'images' has dtype float32, expected uint8; remake the dataset with "
                                        "'cosmotrain data galaxies'"):
        reader.ShardSet(tiny_galaxies, "train")
    path.unlink()
    with pytest.raises(UserError, match="is missing"):
        reader.ShardSet(tiny_galaxies, "train")


def test_nan_in_float_data_is_rejected_on_write_and_on_read(tmp_path):
    patches = np.ones((10, 4, 4), np.float32)
    patches[7, 1, 2] = np.nan
    with pytest.raises(UserError, match="'patches' of sample 7 is nan, not finite"):
        shards.write_dataset(tmp_path / "cmb", "cmb", {"train": cmb_fields(patches)},
                             {}, config={}, seed=1)
    assert not (tmp_path / "cmb").exists()
    shards.write_dataset(tmp_path / "cmb", "cmb", {"train": cmb_fields(np.ones((10, 4, 4), np.float32))}, {}, config={}, seed=1)
    set_values(tmp_path / "cmb", "train-00000-of-00001.h5", "patches", (7, 1, 2), np.nan)  # made elsewhere
    s = reader.ShardSet(tmp_path / "cmb", "train")
    s.read(0, 5)
    with pytest.raises(UserError, match="sample 7 .* NaN or inf"):
        s.read(0, 10)


def test_writer_rejects_wrong_schema(tmp_path):
    with pytest.raises(UserError, match="'labels' has dtype int64, expected int8"):
        shards.write_dataset(tmp_path, "galaxies", {"train": {
            "images": np.zeros((2, 4, 4, 3), np.uint8), "labels": np.zeros(2, np.int64),
            "vote_fractions": np.zeros((2, 3), np.float32), "ids": np.zeros(2, np.int64)}}, {}, config={}, seed=0)


def test_existing_output_is_refused_unless_overwrite(tiny_galaxies):
    before = {p.name: p.stat().st_mtime_ns for p in tiny_galaxies.iterdir()}
    with pytest.raises(UserError, match="already holds a dataset.*--overwrite"):
        shards.claim_output(tiny_galaxies, overwrite=False)
    assert {p.name: p.stat().st_mtime_ns for p in tiny_galaxies.iterdir()} == before
    shards.claim_output(tiny_galaxies, overwrite=True)
    shards.write_dataset(tiny_galaxies, "cmb", {"train": {"patches": np.zeros((3, 2, 2), np.float32),
                                                          "centers": np.zeros((3, 2)), "sky": np.zeros(3, np.int32)}}, {}, config={}, seed=0)
    assert sorted(p.name for p in tiny_galaxies.glob("*.h5")) == ["train-00000-of-00001.h5"]


@pytest.mark.parametrize("n, size", [(103, 1), (103, 2), (103, 4), (1000, 3), (64, 64), (5, 2)])
def test_epoch_slices_are_disjoint_equal_and_cover(n, size):
    for epoch in range(3):
        parts = [np.concatenate([np.arange(a, b) for a, b in epochs.epoch_runs(n, r, size, 42, epoch, block=8)])
                 for r in range(size)]
        assert {len(p) for p in parts} == {n // size}
        together = np.concatenate(parts)
        assert len(np.unique(together)) == len(together) == n - n % size


def test_epochs_are_shuffled_but_reproducible():
    a0 = epochs.epoch_runs(1000, 0, 2, seed=1, epoch=0)
    assert a0 == epochs.epoch_runs(1000, 0, 2, seed=1, epoch=0)
    assert a0 != epochs.epoch_runs(1000, 0, 2, seed=1, epoch=1)
    assert a0 != epochs.epoch_runs(1000, 0, 2, seed=2, epoch=0)


def test_more_ranks_than_samples_is_an_error():
    with pytest.raises(UserError, match="5 samples for 8 ranks"):
        epochs.epoch_runs(5, 0, 8, seed=0, epoch=0)


def test_rank_batches_resume_and_batch_too_large(tiny_galaxies):
    s = reader.ShardSet(tiny_galaxies, "train")
    full = [b["ids"] for b in epochs.rank_batches(s, 1, 2, 10, seed=3, epoch=2, window=20)]
    assert len(full) == 51 // 10
    resumed = [b["ids"] for b in epochs.rank_batches(s, 1, 2, 10, seed=3, epoch=2, start_batch=3, window=20)]
    np.testing.assert_array_equal(np.concatenate(full[3:]), np.concatenate(resumed))
    with pytest.raises(UserError, match="per-rank batch 60 is larger than this rank's 51 samples"):
        next(epochs.rank_batches(s, 0, 2, 60, seed=0, epoch=0))


def test_shuffled_batches_hold_every_sample_of_the_slice_once(tiny_galaxies):
    s = reader.ShardSet(tiny_galaxies, "train")  # 103 samples in 2 shards
    runs = epochs.epoch_runs(s.n, 0, 1, seed=4, epoch=1)
    reading_order = np.concatenate([s.read(a, b, ("ids",))["ids"] for a, b in runs])
    batches = [b["ids"] for b in epochs.rank_batches(s, 0, 1, 8, seed=4, epoch=1, window=32)]
    got = np.concatenate(batches)
    assert len(batches) == 103 // 8 and len(set(got.tolist())) == len(got)
    position = {int(i): p for p, i in enumerate(reading_order)}
    for w in range(0, len(got), 32):  # shuffled within each window of the reading order
        assert sorted(got[w:w + 32]) == sorted(reading_order[w:w + 32])
    for b in batches:  # windows of 4 batches of 8: one sample from each strip of 4 positions
        assert len({(position[int(i)] % 32) // 4 for i in b}) == 8
    assert got.tolist() != reading_order[:len(got)].tolist()
    again = np.concatenate([b["ids"] for b in epochs.rank_batches(s, 0, 1, 8, seed=4, epoch=1, window=32)])
    assert np.array_equal(got, again)


def test_nan_in_a_shuffled_batch_names_its_sample(tmp_path):
    patches = np.ones((200, 4, 4), np.float32)
    shards.write_dataset(tmp_path / "cmb", "cmb", {"train": cmb_fields(patches)},
                         {}, config={}, seed=1, samples_per_shard=70)
    set_values(tmp_path / "cmb", "train-00002-of-00003.h5", "patches", (0, 0, 3), np.inf)  # sample 133
    s = reader.ShardSet(tmp_path / "cmb", "train")
    with pytest.raises(UserError, match="sample 133 .* NaN or inf"):
        list(epochs.rank_batches(s, 0, 1, 10, seed=0, epoch=0, window=40))


def test_d4_transforms_are_the_eight_symmetries():
    img = np.arange(16).reshape(1, 4, 4, 1)
    outs = [augment.d4_transform(img, np.array([k]))[0, ..., 0] for k in range(8)]
    assert len({o.tobytes() for o in outs}) == 8
    np.testing.assert_array_equal(outs[0], img[0, ..., 0])
    np.testing.assert_array_equal(outs[1], np.rot90(img[0, ..., 0]))


def test_byte_offset_reads_equal_hdf5_reads_and_skip_compressed_data(tiny_galaxies, monkeypatch, tmp_path):
    import h5py

    s = reader.ShardSet(tiny_galaxies, "train")
    runs, rows = [(90, 103), (3, 20)], np.random.default_rng(1).permutation(30)
    raw = s.read_runs(runs, rows=rows)
    plain = {k: v for k, v in s.read_runs(runs).items()}
    assert all(np.array_equal(raw[k][rows], plain[k]) for k in plain)
    monkeypatch.setattr(h5raw.RawField, "of", classmethod(lambda cls, dataset, path: None))
    through_hdf5 = reader.ShardSet(tiny_galaxies, "train").read_runs(runs, rows=rows)
    assert all(np.array_equal(raw[k], through_hdf5[k]) for k in raw)
    monkeypatch.undo()
    with h5py.File(tmp_path / "z.h5", "w") as h5:
        h5.create_dataset("x", data=np.ones((50, 4)), chunks=(10, 4), compression="gzip")
        h5.create_dataset("y", data=np.ones((50, 4)), chunks=(10, 4))
        assert h5raw.RawField.of(h5["x"], "z.h5") is None
        assert h5raw.RawField.of(h5["y"], "z.h5").chunk_rows == 10


def _cmb(n: int) -> dict:
    return {"train": cmb_fields(np.ones((n, 4, 4), np.float32))}


def test_a_dataset_replaces_another_whole_and_keeps_the_files_that_are_not_its_own(tmp_path):
    root = tmp_path / "ds"
    shards.write_dataset(root, "cmb", _cmb(10), {}, config={}, seed=0)
    (root / "notes.txt").write_text("mine")
    shards.write_dataset(root, "cmb", _cmb(30), {}, config={}, seed=1, samples_per_shard=10,
                         also=lambda folder: (folder / "preview.txt").write_text("new"))
    assert sorted(p.name for p in root.iterdir()) == ["manifest.json", "notes.txt", "preview.txt",
                                                      "train-00000-of-00003.h5", "train-00001-of-00003.h5",
                                                      "train-00002-of-00003.h5"]
    assert reader.ShardSet(root, "train").n == 30 and not list(tmp_path.glob(".ds.*"))


def test_a_failed_write_leaves_the_old_dataset_as_it_was(tmp_path):
    root = tmp_path / "ds"
    shards.write_dataset(root, "cmb", _cmb(10), {}, config={}, seed=0)
    before = {p.name: p.read_bytes() for p in root.iterdir()}

    def broken(folder):
        raise RuntimeError("the preview failed")
    with pytest.raises(RuntimeError):
        shards.write_dataset(root, "cmb", _cmb(30), {}, config={}, seed=1, also=broken)
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before
    assert not list(tmp_path.glob(".ds.*"))


def test_claim_cleans_what_a_killed_write_left(tmp_path):
    root = tmp_path / "ds"
    shards.write_dataset(root, "cmb", _cmb(10), {}, config={}, seed=0)
    (tmp_path / ".ds.staging-host-123").mkdir()  # killed while writing
    (root / ".train-patches.tmp.npy").write_bytes(b"x")  # a temporary inside the old dataset
    root.rename(tmp_path / ".ds.replaced-host-124")  # killed between the commit's two renames
    with pytest.raises(UserError, match="already holds a dataset"):  # the old dataset is back in place
        shards.claim_output(root, overwrite=False)
    assert reader.ShardSet(root, "train").n == 10
    assert not list(tmp_path.glob(".ds.*")) and not list(root.glob(".*"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".manifest.json.a1b2.tmp").write_text("{")
    assert shards.claim_output(empty, overwrite=False) == empty and not any(empty.iterdir())


def test_the_checksum_cache_skips_unchanged_files_and_sees_an_edit_that_kept_the_mtime(tiny_galaxies):
    from cosmotrain.data import checksums

    path = tiny_galaxies / "val-00000-of-00001.h5"
    digest = json.loads((tiny_galaxies / "manifest.json").read_text())["splits"]["val"]["shards"][0]["sha256"]
    assert checksums.known_good(path, digest)  # the writer remembered what it wrote
    stat = path.stat()
    with h5py.File(path, "r+") as h5:
        h5["labels"][0] = (h5["labels"][0] + 1) % 3
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the edit hides its modification time...
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert not checksums.known_good(path, digest)  # ... not its change time
    with pytest.raises(UserError, match="val-00000-of-00001.h5 does not match its sha256"):
        reader.ShardSet(tiny_galaxies, "val")


def test_a_value_outside_its_range_is_refused_on_write_and_named_on_read(tiny_galaxies, tmp_path):
    fields = {k: v[:4] for k, v in reader.ShardSet(tiny_galaxies, "train").read(0, 4).items()}
    fields["labels"] = np.array([0, 1, 3, 2], np.int8)
    with pytest.raises(UserError, match="'labels' of sample 2 is 3, not in 0..2"):
        shards.write_dataset(tmp_path / "bad", "galaxies", {"train": fields}, {}, config={}, seed=0)
    set_values(tiny_galaxies, "train-00000-of-00003.h5", "vote_fractions", (5, 2), -0.5)
    with pytest.raises(UserError, match=r"train-00000-of-00003.h5: 'vote_fractions' of sample 5 is -0.5, not in "
                                        r"0.0..1.0; remake"):
        reader.ShardSet(tiny_galaxies, "train").check_values(("labels", "vote_fractions"))
