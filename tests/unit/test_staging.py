"""Node-local staging in one process (one node): which shards, checksums, reuse, errors.

The same across the nodes of a real SLURM cluster: tests/cluster/test_multinode.py.
"""
import json

import h5py
import numpy as np
import pytest

from cosmotrain.data import shards, staging
from cosmotrain.data.reader import ShardSet
from cosmotrain.errors import UserError
from cosmotrain.files import sha256


@pytest.fixture
def dataset(tmp_path):
    """A galaxies dataset of 5 training shards of 20 samples and 1 validation shard."""
    rng = np.random.default_rng(0)

    def split(n):
        labels = (np.arange(n) % 3).astype(np.int8)
        return {"images": rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), "labels": labels,
                "vote_fractions": np.eye(3, dtype=np.float32)[labels], "ids": np.arange(n, dtype=np.int64)}

    root = tmp_path / "galaxies"
    shards.write_dataset(root, "galaxies", {"train": split(100), "val": split(20)}, {"class_names": ["a", "b", "c"]},
                         config={}, seed=0, samples_per_shard=20)
    return root


READS = {"train": lambda rank: [(25, 45)], "val": lambda rank: []}  # shards 1 and 2 of train


def test_copies_the_shards_read_checks_them_and_links_the_rest(dataset, tmp_path, caplog):
    caplog.set_level("INFO")
    staged = staging.stage(dataset, str(tmp_path / "local"), READS)
    copies = sorted(p.name for p in staged.glob("*.h5") if not p.is_symlink())
    assert copies == ["train-00001-of-00005.h5", "train-00002-of-00005.h5"]
    assert all(p.resolve().parent == dataset for p in staged.glob("*.h5") if p.is_symlink())
    assert (staged / "manifest.json").read_text() == (dataset / "manifest.json").read_text()
    assert "copied 2 shard(s)" in caplog.text and "sha256 checked" in caplog.text
    whole, local = ShardSet(dataset, "train"), ShardSet(staged, "train")
    np.testing.assert_array_equal(local.read(25, 45)["images"], whole.read(25, 45)["images"])


def test_a_second_job_reuses_good_copies_and_replaces_a_stale_one(dataset, tmp_path, caplog):
    caplog.set_level("INFO")
    staged = staging.stage(dataset, str(tmp_path / "local"), READS)
    (staged / "train-00002-of-00005.h5").write_bytes(b"left by a crashed job")
    caplog.clear()
    staging.stage(dataset, str(tmp_path / "local"), READS)
    assert "copied 1 shard(s)" in caplog.text and "1 already there" in caplog.text
    assert "1 stale copy replaced" in caplog.text
    manifest = json.loads((dataset / "manifest.json").read_text())
    digest = {s["file"]: s["sha256"] for s in manifest["splits"]["train"]["shards"]}["train-00002-of-00005.h5"]
    assert sha256(staged / "train-00002-of-00005.h5") == digest


def test_a_corrupted_shard_is_one_clear_error_and_leaves_no_copy(dataset, tmp_path):
    with h5py.File(dataset / "train-00001-of-00005.h5", "r+") as f:
        f["images"][0, 0, 0, 0] ^= 1
    with pytest.raises(UserError, match=r"train-00001-of-00005.h5 does not match its sha256 in the manifest"):
        staging.stage(dataset, str(tmp_path / "local"), READS)
    assert not list((tmp_path / "local").rglob("train-00001-of-00005.h5*"))


def test_stage_dir_variables_are_expanded_and_an_unset_one_is_refused(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("NODE_SCRATCH", str(tmp_path / "scratch"))
    assert staging.stage(dataset, "$NODE_SCRATCH", READS).is_relative_to(tmp_path / "scratch")
    monkeypatch.delenv("NODE_SCRATCH")
    with pytest.raises(UserError, match=r"data.stage_dir '\$NODE_SCRATCH' is not an absolute path"):
        staging.stage(dataset, "$NODE_SCRATCH", READS)


def test_a_stage_dir_too_small_is_refused_before_copying(dataset, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    monkeypatch.setattr(shutil, "disk_usage", lambda path: namedtuple("U", "total used free")(10, 10, 1000))
    with pytest.raises(UserError, match=r"has 0 MB free but this node's shards need"):
        staging.stage(dataset, str(tmp_path / "local"), READS)
    assert not list((tmp_path / "local").rglob("*.h5"))
