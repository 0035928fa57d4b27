"""Every mistake of the issue's list, made as a user makes it: one line naming the problem and the
fix, exit 2, and nothing written. Findings F1, F2, F14-F17, F19-F23."""
import json

import h5py
import numpy as np
import pytest

from faultlib import CLASSIFIER, GAN, Job, cli, one_error_line, snapshot
from fixtures_galaxy_zoo import build_kaggle_fixture
from testlib import resign, set_values, toy_galaxies
from cosmotrain.data import shards


def train(data, out, *extra, np_=1):
    return cli("train", "classifier", *CLASSIFIER, "--data", data, "--out", out, *extra, np_=np_)


@pytest.mark.parametrize("mistake, key", [("optimizer.base_lr=-0.1", "optimizer.base_lr"),
                                          ("model.activation=relux", "model.activation")])
def test_overwrite_with_a_config_mistake_keeps_the_finished_run(mistake, key, classifier_run, galaxies, copy_of):
    """F1: values only the schedule or the model builder checked now fail when the config is read."""
    run = copy_of(classifier_run)
    before = snapshot(run)
    message = one_error_line(train(galaxies, run, "--overwrite", "--set", mistake))
    assert key in message
    assert snapshot(run) == before


def test_overwrite_keeps_the_old_run_until_the_first_checkpoint_then_clears_all_of_it(gan_run, cmb, copy_of,
                                                                                        tmp_path):
    """F2 (monitors/ left behind), and a replaced run is never lost before the new one has a checkpoint."""
    run = copy_of(gan_run)
    (run / "monitors" / "from-the-old-run.json").write_text("{}")
    old_metrics = (run / "metrics.json").read_bytes()
    job = Job("train", "gan", *GAN, "--data", cmb, "--out", run, "--overwrite", log=tmp_path / "log")
    job.wait_for(lambda: (run / ".replaced" / "config.yaml").is_file() and (run / "config.yaml").is_file(),
                 "the old run moved aside and the new one's config.yaml", every=0.02)
    job.kill()  # before the new run's first checkpoint
    assert not (run / "checkpoints").exists()
    assert (run / ".replaced" / "metrics.json").read_bytes() == old_metrics
    assert (run / ".replaced" / "checkpoints" / "checkpoint").is_file()
    out = cli("train", "gan", *GAN, "--data", cmb, "--out", run, "--overwrite")
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (run / ".replaced").exists()
    assert [p.name for p in (run / "monitors").iterdir()] == ["best.json"]
    assert json.loads((run / "monitors" / "best.json").read_text())["step"] in (3, 6)


def damaged(galaxies, copy_of, field, index, value):
    data = copy_of(galaxies)
    set_values(data, "train-00002-of-00004.h5", field, index, value)
    return data


@pytest.mark.parametrize("field, index, value, words", [
    ("labels", 7, 5, "'labels' of sample 7 is 5, not in -1..2"),                        # F14
    ("vote_fractions", (9, 1), np.nan, "'vote_fractions' of sample 9 is nan, not in 0.0..1.0"),  # F23
])
def test_impossible_values_are_refused_before_anything_is_written(field, index, value, words, galaxies, copy_of,
                                                                  tmp_path):
    data = damaged(galaxies, copy_of, field, index, value)
    message = one_error_line(train(data, tmp_path / "run", np_=2))
    assert message == f"shard {data / 'train-00002-of-00004.h5'}: {words}; remake the dataset or fix that value"
    assert not (tmp_path / "run").exists()


def test_an_empty_split_is_named(tmp_path, classifier_run):
    """F22: it used to say 'use at most 0 ranks'."""
    data = tmp_path / "galaxies"
    empty = {k: v[:0] for k, v in toy_galaxies(1, 9).items()}
    shards.write_dataset(data, "galaxies", {"train": toy_galaxies(96, 1), "val": empty, "test": empty},
                         {"class_names": ["round", "edge-on", "spiral"]}, config={}, seed=0)
    message = one_error_line(train(data, tmp_path / "run"))
    assert message.startswith(f"{data} (val split) is empty; remake the dataset with more samples")
    message = one_error_line(cli("evaluate", "classifier", "--run", classifier_run, "--data", data, "--out",
                                 tmp_path / "eval"))
    assert message.startswith(f"split 'test' of {data} is empty, so there is nothing for evaluation")


def test_four_channel_images_name_the_fix(galaxies, copy_of, tmp_path):
    """F20: a dataset made elsewhere with RGBA images."""
    data = copy_of(galaxies)
    for path in data.glob("*.h5"):
        with h5py.File(path, "r+") as h5:
            rgba = np.concatenate([h5["images"][:], np.full(h5["images"].shape[:3] + (1,), 255, np.uint8)], axis=3)
            del h5["images"]
            h5["images"] = rgba
    resign(data)
    message = one_error_line(train(data, tmp_path / "run"))
    assert "'images' has sample shape 16x16x4, expected anyxanyx3 (RGB: 3 channels" in message
    assert message.endswith("remake the dataset with 'cosmotrain data galaxies'")


def test_wrongly_sized_images_name_the_fix(classifier_run, tmp_path):
    """F21: predicting with a classifier trained on 16x16 images on a dataset of 24x24 ones."""
    data = tmp_path / "big"
    shards.write_dataset(data, "galaxies", {"test": toy_galaxies(32, 4, size=24)},
                         {"class_names": ["round", "edge-on", "spiral"]}, config={}, seed=0)
    message = one_error_line(cli("predict", "classifier", "--run", classifier_run, "--images", data, "--out",
                                 tmp_path / "pred"))
    assert "the classifier takes images of 16x16x3, got 24x24x3: resize them to 16x16 pixels" in message
    assert "--set dataset.image_size=16" in message
    assert not (tmp_path / "pred").exists()


@pytest.fixture
def kaggle(tmp_path):
    root = tmp_path / "kaggle"
    build_kaggle_fixture(root, per_class=3)
    return root


def test_a_vote_table_that_is_not_utf8_names_the_line(kaggle, tmp_path):
    """F15: it used to end in a UnicodeDecodeError traceback."""
    table = kaggle / "training_solutions_rev1.csv"
    lines = table.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b",", b",\xe9", 1)  # a Latin-1 byte in row 3
    table.write_bytes(b"\n".join(lines))
    message = one_error_line(cli("data", "galaxies", "--galaxy-zoo", kaggle, "--out", tmp_path / "ds"))
    assert message == (f"{table} line 4 is not UTF-8 text (byte 0xe9); save the vote table as UTF-8 CSV (Kaggle's "
                       f"file is plain ASCII)")
    assert not (tmp_path / "ds").exists()


def test_a_vote_table_with_a_byte_order_mark_is_read(kaggle, tmp_path):
    """F19: Excel's UTF-8 BOM used to be reported as a missing GalaxyID column."""
    table = kaggle / "training_solutions_rev1.csv"
    table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    out = cli("data", "galaxies", "--galaxy-zoo", kaggle, "--out", tmp_path / "ds")
    assert out.returncode == 0, out.stderr[-3000:]
    assert cli("validate", "dataset", tmp_path / "ds").returncode == 0


@pytest.mark.parametrize("value, words", [
    ("model.filters=[16, 32", "the value is not valid YAML (expected ',' or ']'"),              # F16
    ("train.epochs=!!python/object/apply:os.system ['touch pwned']", "YAML tags such as !!python/... are not "
                                                                      "allowed"),             # F17
])
def test_a_malformed_set_value_is_one_line(value, words, galaxies, tmp_path):
    message = one_error_line(train(galaxies, tmp_path / "run", "--set", value))
    assert message.startswith(f"--set {value}: ") and words in message
    assert not (tmp_path / "run").exists() and not list(tmp_path.rglob("pwned"))
