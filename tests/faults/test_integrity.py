"""Damaged datasets: a shard edited in place or truncated is caught before it is used, and named.
Findings F8 and F25 (and the cache that keeps the check free on reruns)."""
import os

import h5py
import pytest

from faultlib import CLASSIFIER, cli, one_error_line

SHARD = "train-00001-of-00004.h5"


def edit_in_place(data):
    """Flip one label in a shard, as a stray script or a bad disk would (the manifest is not touched)."""
    with h5py.File(data / SHARD, "r+") as h5:
        h5["labels"][5] = (h5["labels"][5] + 1) % 3


def truncate(data):
    os.truncate(data / SHARD, (data / SHARD).stat().st_size // 2)


@pytest.mark.parametrize("damage, words", [(edit_in_place, "does not match its sha256"),
                                           (truncate, "the manifest says")])
def test_a_damaged_shard_is_refused_by_training_and_named_by_validate(damage, words, galaxies, copy_of, tmp_path):
    """F8 (edited in place: it used to train with exit 0) and F25 (truncated)."""
    data = copy_of(galaxies)
    assert cli("validate", "dataset", data).returncode == 0  # verified, and remembered as such
    damage(data)
    out = cli("train", "classifier", *CLASSIFIER, "--data", data, "--out", tmp_path / "run")
    message = one_error_line(out)
    assert message.startswith(f"shard {data / SHARD} ") and words in message
    assert not (tmp_path / "run").exists()
    checked = cli("validate", "dataset", data)
    assert checked.returncode == 1
    problems = [line for line in checked.stdout.splitlines() if line.startswith("shard ")]
    assert len(problems) == 1 and problems[0].startswith(f"shard {data / SHARD} ") and words in problems[0]
    assert "1 damaged" in checked.stdout.splitlines()[-1]


def test_an_edited_test_split_is_refused_by_evaluation_and_prediction(galaxies, classifier_run, copy_of, tmp_path):
    """F8 for the readers of a finished run."""
    data = copy_of(galaxies)
    with h5py.File(data / "test-00000-of-00001.h5", "r+") as h5:
        h5["images"][0, 0, 0, 0] ^= 1
    for args in (("evaluate", "classifier", "--run", classifier_run, "--data", data, "--out", tmp_path / "eval"),
                 ("predict", "classifier", "--run", classifier_run, "--images", data, "--out", tmp_path / "pred")):
        message = one_error_line(cli(*args))
        assert message.startswith(f"shard {data / 'test-00000-of-00001.h5'} does not match its sha256")
