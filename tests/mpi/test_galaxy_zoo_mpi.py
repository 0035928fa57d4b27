"""`cosmotrain data galaxies` on real Open MPI ranks: the same dataset whatever the rank count."""
import json
import time

import h5py
import numpy as np
import pytest

from testlib import run_cli
from fixtures_galaxy_zoo import build_kaggle_fixture, rewrite_csv

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory):
    root = tmp_path_factory.mktemp("kaggle")
    return root, build_kaggle_fixture(root, per_class=4)


@pytest.fixture(scope="module")
def ingested(kaggle, tmp_path_factory):
    """The fixture ingested by 1 rank and by 2 ranks."""
    root, _ = kaggle
    out = tmp_path_factory.mktemp("ingest")
    for ranks in (1, 2):
        done = run_cli("data", "galaxies", "--galaxy-zoo", root, "--out", out / f"np{ranks}", np_=ranks)
        assert done.returncode == 0, done.stderr
    return out / "np1", out / "np2"


def _read_all(root) -> dict:
    manifest = json.loads((root / "manifest.json").read_text())
    out = {}
    for split, entry in manifest["splits"].items():
        for shard in entry["shards"]:
            with h5py.File(root / shard["file"], "r") as h5:
                for name in ("images", "labels", "vote_fractions", "ids"):
                    out.setdefault((split, name), []).append(h5[name][...])
                attrs = {k: (list(v) if isinstance(v, np.ndarray) else v) for k, v in h5.attrs.items()}
    return {k: np.concatenate(v) for k, v in out.items()} | {"attrs": attrs, "manifest": manifest}


def test_ingest_keeps_the_right_galaxies_with_their_labels_and_votes(kaggle, ingested):
    _, expected = kaggle
    data = _read_all(ingested[0])
    ids = np.concatenate([data[(s, "ids")] for s in ("train", "val", "test")])
    labels = np.concatenate([data[(s, "labels")] for s in ("train", "val", "test")])
    votes = np.concatenate([data[(s, "vote_fractions")] for s in ("train", "val", "test")])
    assert dict(zip(ids.tolist(), labels.tolist())) == expected["labels"]
    for galaxy, v in zip(ids.tolist(), votes):
        assert np.allclose(v, expected["votes"][galaxy])
    assert data[("train", "images")].shape[1:] == (64, 64, 3)
    assert data["attrs"]["threshold"] == 0.9 and list(data["attrs"]["class_names"]) == ["round", "edge-on", "spiral"]


def test_broken_jpegs_are_skipped_counted_and_listed_in_the_manifest(kaggle, ingested):
    _, expected = kaggle
    skipped = _read_all(ingested[0])["manifest"]["skipped"]
    assert skipped["count"] == 2
    assert skipped["truncated"] == expected["truncated"] and skipped["corrupt"] == expected["corrupt"]


def test_two_ranks_write_exactly_the_dataset_one_rank_writes(ingested):
    one, two = (json.loads((d / "manifest.json").read_text()) for d in ingested)
    for volatile in ("created", "versions"):
        one.pop(volatile), two.pop(volatile)
    assert one == two  # same shards, same sha256 of every file, same skipped list and counts


def test_two_ranks_make_the_same_synthetic_dataset_as_one(tmp_path):
    for ranks in (1, 2):
        done = run_cli("data", "galaxies", "--synthetic", "600", "--out", tmp_path / f"np{ranks}", np_=ranks)
        assert done.returncode == 0, done.stderr
    one, two = (json.loads((tmp_path / f"np{r}" / "manifest.json").read_text()) for r in (1, 2))
    assert one["splits"] == two["splits"]  # file names, counts and sha256
    assert [one["splits"][s]["n"] for s in ("train", "val", "test")] == [480, 60, 60]


def test_a_bad_table_ends_a_two_rank_ingest_quickly_with_the_message_on_every_rank(kaggle, tmp_path):
    root, _ = kaggle
    broken = tmp_path / "kaggle"
    (broken / "images_training_rev1").mkdir(parents=True)
    (broken / "training_solutions_rev1.csv").write_bytes((root / "training_solutions_rev1.csv").read_bytes())
    rewrite_csv(broken / "training_solutions_rev1.csv", drop=("Class4.1",))
    start = time.monotonic()
    done = run_cli("data", "galaxies", "--galaxy-zoo", broken, "--out", tmp_path / "ds", np_=2, timeout=60)
    assert done.returncode != 0 and time.monotonic() - start < 30
    ours = [ln for ln in done.stderr.splitlines() if "error:" in ln]
    assert len(ours) == 2 and all("lacks column Class4.1" in ln for ln in ours)
    assert {"[rank 0]", "[rank 1]"} == {ln.split(":")[0].split(" ", 1)[1] for ln in ours}
    assert not (tmp_path / "ds").exists()
