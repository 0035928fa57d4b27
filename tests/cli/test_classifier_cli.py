"""`cosmotrain train classifier` / `evaluate classifier` end to end, as a user runs them (one process)."""
import json
import os
import shutil

import numpy as np
import pytest

from testlib import REPO, run_cli, tensorboard_scalars, toy_galaxies
from cosmotrain.data import reader, shards

CLASSES = ["round", "edge-on", "spiral"]
TINY = ["--config", str(REPO / "configs" / "classifier_tiny.yaml"), "--set", "model.filters=[8, 16]",
        "--set", "model.dense=[16]", "--set", "train.batch_size=16", "--set", "train.epochs=2"]


def write_galaxies(root, train_classes=(0, 1, 2)):
    splits = {"train": toy_galaxies(384, 1, classes=train_classes), "val": toy_galaxies(64, 2), "test": toy_galaxies(96, 3)}
    shards.write_dataset(root, "galaxies", splits, {"class_names": CLASSES, "threshold": 0.9, "source": "test"},
                         config={}, seed=0, samples_per_shard=100)
    return root


def train(data, out, *extra):
    return run_cli("train", "classifier", *TINY, "--data", data, "--out", out, *extra, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-epoch run on toy galaxies: (dataset, run)."""
    base = tmp_path_factory.mktemp("clf")
    data = write_galaxies(base / "galaxies")
    out = train(data, base / "run")
    assert out.returncode == 0, out.stderr
    return data, base / "run"


def test_training_writes_config_history_checkpoints_and_logs(trained):
    data, run = trained
    config = (run / "config.yaml").read_text()
    assert str(data) in config and "batch_size: 16" in config
    rows = (run / "history.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,lr,loss,accuracy,val_loss,val_accuracy") and len(rows) == 3
    assert list((run / "checkpoints").glob("ckpt-48.index")) and list((run / "checkpoints" / "best").glob("*.index"))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["epochs"] == 2 and summary["global_step"] == 48 and summary["warnings"] == []


def test_tensorboard_groups_training_and_validation(trained):
    _, run = trained
    board = tensorboard_scalars(run / "tensorboard")
    assert set(board) == {"train/loss", "train/accuracy", "train/learning_rate", "train/samples_per_second",
                          "train/epoch_seconds", "val/loss", "val/accuracy", "val/vote_rmse"}
    last = (run / "history.csv").read_text().splitlines()[-1].split(",")
    assert board["val/loss"][2] == pytest.approx(float(last[5])) and board["train/loss"][2] == pytest.approx(float(last[3]))


def test_evaluation_agrees_with_a_direct_computation_on_the_test_set(trained):
    data, run = trained
    out = run_cli("evaluate", "classifier", "--run", run)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((run / "eval" / "metrics.json").read_text())

    import tensorflow as tf
    from cosmotrain import config
    from cosmotrain.models.classifier import build_classifier
    from cosmotrain.train.classifier import ClassifierConfig

    cfg = config.load(ClassifierConfig, run / "config.yaml")
    model = build_classifier(cfg.model, (16, 16, 3))
    tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(run / "checkpoints" / "best")).expect_partial()
    test = reader.ShardSet(data, "test").read(0, 96)
    preds = model.predict(test["images"], verbose=0).argmax(axis=1)
    labels = test["labels"].astype(int)
    assert metrics["n"] == 96 and metrics["tta"] is False
    assert metrics["accuracy"] == pytest.approx(np.mean(preds == labels))
    expected = [[int(np.sum((labels == i) & (preds == j))) for j in range(3)] for i in range(3)]
    assert metrics["confusion_matrix"] == expected
    recall = expected[1][1] / 32
    assert metrics["per_class"]["edge-on"]["recall"] == pytest.approx(recall)
    for name in ("confusion_matrix", "curves", "misclassified"):
        png = run / "eval" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_tta_evaluation_averages_the_d4_transforms_and_keeps_the_plain_one(trained):
    _, run = trained
    plain = (run / "eval" / "metrics.json").read_bytes()
    out = run_cli("evaluate", "classifier", "--run", run, "--tta", "--checkpoint", "latest")
    assert out.returncode == 0, out.stderr
    metrics = json.loads((run / "eval" / "metrics_tta.json").read_text())
    assert metrics["tta"] is True and metrics["n"] == 96 and metrics["checkpoint"].endswith("ckpt-48")
    assert "D4 TTA" in out.stderr
    assert (run / "eval" / "metrics.json").read_bytes() == plain  # beside the plain evaluation, not over it
    for name in ("confusion_matrix_tta", "misclassified_tta"):
        assert (run / "eval" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_evaluation_is_replaced_only_with_overwrite(trained):
    _, run = trained
    before = (run / "eval" / "metrics.json").read_bytes()
    out = run_cli("evaluate", "classifier", "--run", run)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"cosmotrain: error: {run}/eval already holds an evaluation of ckpt-48 (epoch 2) on the test split, "
        f"accuracy {json.loads(before)['accuracy']:.4f} (metrics.json); pass --overwrite to replace it, or "
        f"--out DIR to keep both"]
    assert (run / "eval" / "metrics.json").read_bytes() == before
    out = run_cli("evaluate", "classifier", "--run", run, "--overwrite")
    assert out.returncode == 0, out.stderr
    assert json.loads((run / "eval" / "metrics.json").read_text())["accuracy"] == json.loads(before)["accuracy"]


def test_any_checkpoint_path_can_be_evaluated(trained, tmp_path):
    _, run = trained
    out = run_cli("evaluate", "classifier", "--run", run, "--checkpoint", run / "checkpoints" / "ckpt-24",
                  "--out", tmp_path / "epoch1")
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "epoch1" / "metrics.json").read_text())
    assert metrics["checkpoint"] == str(run / "checkpoints" / "ckpt-24") and metrics["epoch"] == 1


def test_every_output_is_readable_by_collaborators(trained, tmp_path):
    """Files follow the umask, like any program's: 0644 under the usual 022 (not mkstemp's 0600)."""
    data, run = trained
    mask = os.umask(0o022)
    os.umask(mask)
    written = [p for p in run.rglob("*") if p.is_file() and "tensorboard" not in p.parts]
    assert any(p.suffix == ".png" for p in written) and any(p.name == "config.yaml" for p in written)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in written}
    assert set(modes.values()) == {oct(0o666 & ~mask)}, modes
    old = os.umask(0o027)  # a group-only site: the evaluation follows it too
    try:
        out = run_cli("evaluate", "classifier", "--run", run, "--out", tmp_path / "group")
    finally:
        os.umask(old)
    assert out.returncode == 0, out.stderr
    assert {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "group").iterdir()} == {"0o640"}


def test_a_run_directory_is_not_overwritten_by_accident(trained):
    data, run = trained
    before = (run / "config.yaml").stat().st_mtime_ns
    out = train(data, run)
    assert out.returncode == 2
    assert "already holds a run" in out.stderr and "--resume" in out.stderr and "--overwrite" in out.stderr
    assert (run / "config.yaml").stat().st_mtime_ns == before


def test_resume_without_a_checkpoint_starts_from_scratch_and_says_so(trained, tmp_path):
    data, _ = trained  # what a requeued job does when it was stopped before its first checkpoint
    out = train(data, tmp_path / "empty", "--resume")
    assert out.returncode == 0 and "has no checkpoint yet; starting from scratch" in out.stderr
    assert (tmp_path / "empty" / "metrics.json").exists()


def test_a_batch_larger_than_the_rank_slice_fails_before_training(trained, tmp_path):
    data, _ = trained
    out = train(data, tmp_path / "big", "--set", "train.batch_size=500")
    assert out.returncode == 2
    assert "per-rank batch 500 is larger than this rank's 384 samples" in out.stderr
    assert not (tmp_path / "big").exists()


def test_a_checkpoint_of_another_model_is_refused(trained, tmp_path):
    data, run = trained
    copy = shutil.copytree(run, tmp_path / "copy")
    out = train(data, copy, "--resume", "--set", "model.filters=[4, 8]")
    assert out.returncode == 2
    assert "different model or config" in out.stderr and "model.filters" in out.stderr


def test_nan_loss_stops_with_the_last_good_checkpoint_kept(trained, tmp_path):
    data, run = trained
    copy = shutil.copytree(run, tmp_path / "nan")
    kept = sorted(p.name for p in (copy / "checkpoints").iterdir())
    out = train(data, copy, "--resume", "--set", "train.epochs=4", "--set", "optimizer.base_lr=1.0e+10")
    assert out.returncode != 0
    assert "loss became NaN/inf" in out.stderr and f"{copy}/checkpoints/ckpt-48 is kept" in out.stderr
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == kept
    assert len((copy / "history.csv").read_text().splitlines()) == 3


def test_a_class_missing_from_training_is_warned_about_in_log_and_metrics(tmp_path):
    data = write_galaxies(tmp_path / "two-classes", train_classes=(0, 1))
    out = train(data, tmp_path / "run", "--set", "train.epochs=1")
    assert out.returncode == 0, out.stderr
    assert "class 'spiral' (2) has no samples in the training split" in out.stderr
    assert any("spiral" in w for w in json.loads((tmp_path / "run" / "metrics.json").read_text())["warnings"])
    out = run_cli("evaluate", "classifier", "--run", tmp_path / "run")
    assert out.returncode == 0, out.stderr
    warnings = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())["warnings"]
    assert any("'spiral'" in w and "training split" in w for w in warnings)


def with_unkept(split: dict, every: int, seed: int) -> dict:
    """``split`` with soft vote fractions, every ``every``-th galaxy unkept (label -1, split votes), kept first."""
    rng = np.random.default_rng(seed)
    labels = split["labels"].astype(np.int8).copy()
    votes = 0.92 * np.eye(3, dtype=np.float32)[labels] + rng.dirichlet((1, 1, 1), len(labels)).astype(np.float32) * 0.08
    unkept = np.arange(len(labels)) % every == 0
    votes[unkept] = rng.dirichlet((2, 2, 2), unkept.sum()).astype(np.float32) * 0.3 + votes[unkept] * 0.7
    labels[unkept] = -1
    order = np.concatenate([np.flatnonzero(~unkept), np.flatnonzero(unkept)])
    return {**{k: v[order] for k, v in split.items()}, "labels": labels[order], "vote_fractions": votes[order]}


def test_the_vote_loss_trains_on_every_galaxy_and_evaluation_scores_votes_on_all(tmp_path):
    import h5py

    splits = {"train": with_unkept(toy_galaxies(384, 1), 4, 1), "val": with_unkept(toy_galaxies(64, 2), 4, 2),
              "test": with_unkept(toy_galaxies(96, 3), 4, 3)}
    shards.write_dataset(tmp_path / "votes", "galaxies", splits, {"class_names": CLASSES, "threshold": 0.9,
                                                                  "source": "test"}, config={}, seed=0)
    out = train(tmp_path / "votes", tmp_path / "run", "--set", "train.loss=votes")
    assert out.returncode == 0, out.stderr
    assert "loss on the vote fractions of all" in out.stderr and "288 kept by a class" in out.stderr
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert "val_vote_rmse" in history[0].split(",")
    out = run_cli("evaluate", "classifier", "--run", tmp_path / "run")
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 72 and metrics["n_all"] == 96 and metrics["n_unkept"] == 24  # accuracy: the kept ones
    pred = run_cli("predict", "classifier", "--run", tmp_path / "run", "--images", tmp_path / "votes",
                   "--out", tmp_path / "pred")
    assert pred.returncode == 0, pred.stderr
    with h5py.File(tmp_path / "pred" / "samples.h5") as h5:
        probs = h5["probabilities"][:]
    votes = reader.ShardSet(tmp_path / "votes", "test").read(0, 96)["vote_fractions"]
    assert metrics["vote_rmse"] == pytest.approx(np.sqrt(np.mean((probs - votes) ** 2)), abs=1e-5)
    assert metrics["vote_rmse"] < metrics["vote_rmse_of_mean"]  # it learnt something about the votes
    out = train(tmp_path / "votes", tmp_path / "typo", "--set", "train.loss=vote")
    assert out.returncode == 2 and "train.loss" in out.stderr.strip().splitlines()[-1]
