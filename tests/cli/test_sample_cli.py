"""`sample gan`, `validate samples` and `predict classifier` end to end, through the console script.

Real runs: a GAN trained for a few steps on a small simulated CMB dataset and a classifier
trained for one epoch on a small galaxies dataset, both made with the real commands.
"""
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from testlib import run_cli
from cosmotrain.data import reader, shards
from cosmotrain.files import sha256


def error_lines(done):
    return [line for line in done.stderr.splitlines() if "error:" in line]


def files(folder):
    return {p.name: sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


# ---------------------------------------------------------------- bad input, before any model is loaded

def test_a_non_positive_count_is_one_line_on_every_rank_and_nothing_is_written(tmp_path):
    done = run_cli("sample", "gan", "--run", tmp_path, "--n", "0", "--out", tmp_path / "set", np_=2)
    assert done.returncode != 0
    lines = error_lines(done)
    assert {line.split("]")[0] for line in lines} == {"cosmotrain [rank 0", "cosmotrain [rank 1"}
    assert all(line.endswith("pass --n N with N >= 1") for line in lines)
    assert not (tmp_path / "set").exists()


def test_a_missing_run_is_named(tmp_path):
    done = run_cli("sample", "gan", "--run", tmp_path / "nope", "--n", "10", "--out", tmp_path / "set")
    assert done.returncode == 2
    assert error_lines(done) == [f"cosmotrain: error: run folder {tmp_path / 'nope'} does not exist; "
                                 f"pass --run RUN made by 'cosmotrain train gan'"]


# ---------------------------------------------------------------- sample gan

@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    """A small Gaussian CMB dataset (32x32 patches of 8') and a GAN trained on it for 4 steps."""
    import reference

    root = tmp_path_factory.mktemp("gan")
    ell = np.arange(3000.0)
    cl = 1e3 * ((ell + 10.0) / 100.0) ** -2.5
    rng = np.random.default_rng(8)

    def split(n, sky):
        return {"patches": reference.gaussian_patches(cl, n, (32, 32), 8.0, rng, pad=2).astype(np.float32),
                "centers": np.zeros((n, 2)), "sky": np.full(n, sky, np.int32)}
    shards.write_dataset(root / "cmb", "cmb", {"train": split(160, 0), "val": split(64, 1), "test": split(64, 2)},
                         {"reso_arcmin": 8.0, "lmax": 2999, "units": "uK_CMB"}, config={}, seed=8)
    done = run_cli("train", "gan", "--data", root / "cmb", "--out", root / "run", "--set", "train.steps=4",
                   "--set", "train.batch_size=16", "--set", "model.image_size=32", "--set", "model.g_filters=32",
                   "--set", "model.d_filters=8", "--set", "monitor.every=2", "--set", "monitor.generated=64",
                   "--set", "monitor.reference=64", "--set", "monitor.group_size=16",
                   "--set", "train.checkpoint_every=2")
    assert done.returncode == 0, done.stderr
    return root / "cmb", root / "run"


def test_gan_samples_are_the_same_on_one_and_two_ranks_with_a_checked_manifest(gan_run, tmp_path):
    from cosmotrain.sampleplan import verify

    _, run = gan_run
    sets = {}
    for np_ in (1, 2):
        out = tmp_path / f"np{np_}"
        done = run_cli("sample", "gan", "--run", run, "--n", "300", "--batch", "32", "--seed", "4", "--out", out,
                       np_=np_)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1].startswith(f"300 patches in {out / 'samples.h5'}")
        with h5py.File(out / "samples.h5", "r") as h5:
            sets[np_] = h5["patches"][:]
            assert h5["patches"].attrs["units"] == "uK_CMB"
            assert h5["patches"].attrs["reso_arcmin"] == 8.0  # the pixel size travels with the patches
    np.testing.assert_array_equal(sets[1], sets[2])
    assert sets[2].shape == (300, 32, 32) and np.isfinite(sets[2]).all()
    manifest = verify(tmp_path / "np2")  # every part's sha256 matches
    assert manifest["identity"]["seed"] == 4 and manifest["n"] == 300 and len(manifest["parts"]) == 2
    from cosmotrain.checkpoints import newest

    best = newest(run.resolve() / "checkpoints" / "best")  # the resolved checkpoint, not the word "best"
    assert manifest["model"]["checkpoint"] == best and manifest["model"]["requested"] == "best"
    assert len(manifest["model"]["sha256"]) == 64 and manifest["dataset"]["reso_arcmin"] == 8.0
    assert manifest["config"]["run"]["monitor"]["group_size"] == 16 and "tensorflow-cpu" in manifest["versions"]


def test_a_checkpoint_of_another_model_or_a_missing_one_is_refused(gan_run, classifier_run, tmp_path):
    _, clf = classifier_run
    _, run = gan_run
    for args in (("--run", clf), ("--run", run, "--checkpoint", run / "checkpoints" / "ckpt-999")):
        done = run_cli("sample", "gan", *args, "--n", "10", "--out", tmp_path / "set")
        assert done.returncode == 2 and len(error_lines(done)) == 1, done.stderr
        assert not (tmp_path / "set").exists()
        assert "is a classifier run, not a GAN run" in done.stderr or "not found" in done.stderr


def test_a_run_of_the_other_model_is_named_as_such(gan_run, classifier_run, tmp_path):
    _, clf = classifier_run
    _, gan = gan_run
    from cosmotrain.checkpoints import newest

    best = Path(newest(gan / "checkpoints" / "best")).name
    done = run_cli("evaluate", "classifier", "--run", gan)
    assert done.returncode == 2 and error_lines(done) == [
        f"cosmotrain: error: {gan} is a GAN run, not a classifier run ({best} holds a 'cmb-dcgan' model); pass a "
        f"run made by 'cosmotrain train classifier'"]
    assert not (gan / "eval").exists()
    done = run_cli("sample", "gan", "--run", clf, "--n", "10", "--out", tmp_path / "set")
    assert done.returncode == 2 and "is a classifier run, not a GAN run" in error_lines(done)[0]


# ---------------------------------------------------------------- predict classifier

@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
    """A galaxies dataset and a classifier trained on it for one epoch."""
    root = tmp_path_factory.mktemp("classifier")
    rng = np.random.default_rng(0)

    def split(n, first_id):
        return {"images": rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8),
                "labels": (np.arange(n) % 3).astype(np.int8),
                "vote_fractions": np.eye(3, dtype=np.float32)[np.arange(n) % 3],
                "ids": np.arange(first_id, first_id + n, dtype=np.int64) * 7}
    shards.write_dataset(root / "galaxies", "galaxies", {"train": split(64, 0), "val": split(32, 1000),
                                                         "test": split(45, 2000)},
                         {"class_names": ["round", "edge-on", "spiral"], "threshold": 0.9, "source": "test"},
                         config={}, seed=0, samples_per_shard=20)
    done = run_cli("train", "classifier", "--config", "configs/classifier_tiny.yaml", "--data", root / "galaxies",
                   "--out", root / "run", "--set", "train.epochs=1", "--set", "model.filters=[4]",
                   "--set", "model.dense=[8]", "--set", "train.batch_size=16")
    assert done.returncode == 0, done.stderr
    return root / "galaxies", root / "run"


@pytest.fixture(scope="module")
def predictions(classifier_run, tmp_path_factory):
    """The test split's predictions made on 1 and on 2 ranks: {ranks: folder}."""
    images, run = classifier_run
    root = tmp_path_factory.mktemp("predictions")
    for np_ in (1, 2):
        done = run_cli("predict", "classifier", "--run", run, "--images", images, "--out", root / f"np{np_}",
                       "--batch", "8", np_=np_)
        assert done.returncode == 0, done.stderr
    return {1: root / "np1", 2: root / "np2"}


def test_predictions_carry_the_ids_and_do_not_depend_on_the_rank_count(classifier_run, predictions):
    images, _ = classifier_run
    sets = {}
    for np_, out in predictions.items():
        with h5py.File(out / "samples.h5", "r") as h5:
            sets[np_] = {k: h5[k][:] for k in ("ids", "probabilities", "predicted")}
            names = json.loads(h5["probabilities"].attrs["class_names"])
    assert names == ["round", "edge-on", "spiral"]
    for key in sets[1]:
        np.testing.assert_array_equal(sets[1][key], sets[2][key])
    test = reader.ShardSet(images, "test").read(0, 45, ("ids",))
    np.testing.assert_array_equal(sets[2]["ids"], test["ids"])
    np.testing.assert_allclose(sets[2]["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(sets[2]["predicted"], sets[2]["probabilities"].argmax(axis=1))
    manifest = json.loads((predictions[2] / "manifest.json").read_text())
    assert manifest["kind"] == "classifier-predictions" and len(manifest["parts"]) == 2
    assert manifest["images"]["split"] == "test" and manifest["class_names"] == names
    assert manifest["model"]["checkpoint"].endswith("/checkpoints/best/ckpt-4") and manifest["model"]["epoch"] == 1


def test_a_rerun_leaves_a_complete_set_alone_and_another_command_is_refused(classifier_run, predictions):
    images, run = classifier_run
    out = predictions[1]
    args = ("predict", "classifier", "--run", run, "--images", images, "--out", out, "--batch", "8")
    before = files(out)
    again = run_cli(*args)
    assert again.returncode == 0 and files(out) == before
    assert "already complete, nothing to do" in again.stdout
    other = run_cli(*args, "--tta")
    assert other.returncode == 2 and files(out) == before
    assert error_lines(other) == [f"cosmotrain: error: {out} already holds a different sample set (identity.tta "
                                  f"False there, True now); rerun the command that made it to resume, pick a new "
                                  f"--out, or pass --overwrite"]
