"""The classifier trainer on 2 real Open MPI ranks: consistency, gradient averaging, exact resume, SIGUSR1."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from testlib import BIN, REPO, mpi_env, run_cli, run_mpi_python
from cosmotrain.data import shards

pytestmark = pytest.mark.mpi

# 6 epochs of 12 steps (2 ranks x 16); constant LR after warmup, so changing train.epochs on
# resume does not change the schedule and resumed runs must end bit-identical.
SETTINGS = ["model.filters=[8, 16]", "model.dense=[16]", "train.batch_size=16", "train.epochs=6",
            "optimizer.decay=constant"]
TINY = ["--config", str(REPO / "configs" / "classifier_tiny.yaml")] + [a for s in SETTINGS for a in ("--set", s)]


def toy_galaxies(root: Path) -> Path:
    """384/64 toy galaxies (16x16): class c is a noisy blob, bar or ring."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:16, :16] - 7.5
    r = np.hypot(x, y) / 16
    shapes = [np.exp(-(r / 0.18) ** 2), np.exp(-(y / 1.0) ** 2) * (np.abs(x) < 6), np.exp(-((r - 0.3) / 0.06) ** 2)]

    def split(n, first):
        labels = (np.arange(n) % 3).astype(np.int8)
        images = np.clip(np.stack([shapes[c] for c in labels])[..., None] + rng.normal(0, 0.1, (n, 16, 16, 3)), 0, 1)
        return {"images": (images * 255).astype(np.uint8), "labels": labels,
                "vote_fractions": np.eye(3, dtype=np.float32)[labels], "ids": np.arange(first, first + n)}

    shards.write_dataset(root, "galaxies", {"train": split(384, 0), "val": split(64, 1000)},
                         {"class_names": ["round", "edge-on", "spiral"], "threshold": 0.9, "source": "test"},
                         config={}, seed=0, samples_per_shard=100)
    return root


def train_cli(data, out, *extra, **kw):
    return run_cli("train", "classifier", *TINY, "--data", data, "--out", out, *extra, np_=2, timeout=300, **kw)


def checkpoint_tensors(run: Path) -> dict:
    """Every model/optimizer tensor of the run's newest checkpoint."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(run / "checkpoints"))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k.startswith(("model/", "optimizer/"))}


def assert_same_weights(run_a: Path, run_b: Path) -> None:
    a, b = checkpoint_tensors(run_a), checkpoint_tensors(run_b)
    assert a.keys() == b.keys() and len(a) > 10
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not different, f"not bit-identical: {different[:4]}"


DIGESTS = """
import sys
from cosmotrain import dist, logs, rundir
dist.init_horovod()
logs.setup()
from cosmotrain.train import classifier
from cosmotrain.train.replicas import weights_digest
cfg = rundir.resolve_config(classifier.ClassifierConfig, sys.argv[1], sys.argv[4:], sys.argv[2], sys.argv[3], False)
run = classifier.prepare(cfg, sys.argv[3])
code = run.execute()
state = run.trainer.model.variables + list(run.trainer.optimizer.variables)
# One file per rank: mpirun's forwarding of several ranks' stdout may merge or drop lines.
with open(f"{sys.argv[3]}.digest-{dist.context().rank}", "w") as f:
    f.write(f"{dist.context().rank} {code} {weights_digest(state)}\\n")
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-rank run, and each rank's digest of its final weights and optimizer state."""
    base = tmp_path_factory.mktemp("clf-mpi")
    data = toy_galaxies(base / "galaxies")
    out = run_mpi_python(DIGESTS, np_=2, timeout=300,
                         args=(REPO / "configs" / "classifier_tiny.yaml", data, base / "reference", *SETTINGS))
    assert out.returncode == 0, out.stderr
    digests = sorted(path.read_text().split() for path in base.glob("reference.digest-*"))
    assert len(digests) == 2, out.stdout + out.stderr
    return data, base / "reference", digests


def test_both_ranks_end_with_identical_weights(reference):
    _, run, digests = reference
    assert [d[0] for d in digests] == ["0", "1"] and digests[0][1] == digests[1][1] == "0"
    assert digests[0][2] == digests[1][2]
    assert json.loads((run / "metrics.json").read_text())["weights_identical_across_ranks"] is True


FIRST_UPDATE = """
import sys
import numpy as np
from cosmotrain import config, dist
ctx = dist.init_horovod()
import tensorflow as tf
from cosmotrain.train import classifier
from cosmotrain.train.randomness import seed_everything
B = 16
cfg = config.load(classifier.ClassifierConfig, None, [
    "model.filters=[8, 16]", "model.dense=[16]", "model.dropout=0.0", "train.augment=false", f"train.batch_size={B // ctx.size}",
    "optimizer.name=sgd", "optimizer.momentum=0.0", "optimizer.base_lr=0.1", f"optimizer.base_batch={B}"])
seed_everything(cfg.train.seed, True)
trainer = classifier.ClassifierTrainer(cfg, (16, 16, 3), 3, steps_per_epoch=10)
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (B, 16, 16, 3), dtype=np.uint8)
labels = (np.arange(B) % 3).astype(np.int8)
mine = slice(ctx.rank * B // ctx.size, (ctx.rank + 1) * B // ctx.size)
before = [v.numpy() for v in trainer.model.trainable_variables]
trainer.train_step(images[mine], labels[mine], tf.constant(False))
trainer.after_first_step()
if ctx.rank == 0:
    np.savez(sys.argv[1], *[v.numpy() - b for v, b in zip(trainer.model.trainable_variables, before)])
"""


def test_one_rank_with_batch_b_and_two_with_b_over_2_make_the_same_first_update(tmp_path):
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    out = subprocess.run([sys.executable, "-c", FIRST_UPDATE, one], capture_output=True, text=True, timeout=120,
                         env=mpi_env())
    assert out.returncode == 0, out.stderr
    out = run_mpi_python(FIRST_UPDATE, np_=2, args=(two,), timeout=120)
    assert out.returncode == 0, out.stderr
    a, b = np.load(one), np.load(two)
    assert len(a.files) == len(b.files) > 4
    for key in a.files:
        assert np.abs(a[key]).max() > 0
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-7)


def test_a_run_stopped_after_an_epoch_and_resumed_equals_the_uninterrupted_run(reference, tmp_path):
    data, ref, _ = reference
    out = train_cli(data, tmp_path / "run", "--set", "train.epochs=2")
    assert out.returncode == 0, out.stderr
    out = train_cli(data, tmp_path / "run", "--resume")  # TINY says 6 epochs: 4 more
    assert out.returncode == 0, out.stderr
    assert "resumed from" in out.stderr
    changed = [line for line in out.stderr.splitlines() if "resuming with changed settings" in line]
    assert len(changed) == 1 and "[0/2] WARNING resuming with changed settings (train.epochs 2 -> 6)" in changed[0]
    assert_same_weights(ref, tmp_path / "run")
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5", "6"]


def _rank_pid(mpirun: subprocess.Popen, rank: int) -> int:
    """PID of ``rank`` among mpirun's children (read from their environment)."""
    for _ in range(200):
        for task in Path(f"/proc/{mpirun.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                try:
                    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
                    return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"rank {rank} not found")


def test_sigusr1_on_one_rank_checkpoints_exits_75_and_resumes_exactly(reference, tmp_path):
    data, ref, _ = reference
    run = tmp_path / "run"
    cmd = ["mpirun", "-np", "2", "--bind-to", "none", str(BIN / "cosmotrain"), "train", "classifier", *TINY,
           "--data", str(data), "--out", str(run)]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mpi_env(), cwd=REPO)
    deadline = time.monotonic() + 240
    while not list((run / "checkpoints").glob("ckpt-12.index")) and job.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint after epoch 1"
        time.sleep(0.02)
    os.kill(_rank_pid(job, 1), signal.SIGUSR1)  # SLURM would signal every rank; one is enough
    _, err = job.communicate(timeout=120)
    assert job.returncode == 75, err
    assert "stopping for requeue" in err
    out = train_cli(data, run, "--resume")
    assert out.returncode == 0, out.stderr
    assert_same_weights(ref, run)


def test_training_runs_under_horovodrun_with_gloo(reference, tmp_path):
    data, _, _ = reference
    cmd = [str(BIN / "horovodrun"), "-np", "2", "--gloo", "-H", "localhost:2", str(BIN / "cosmotrain"), "train",
           "classifier", *TINY, "--set", "train.epochs=1", "--data", str(data), "--out", str(tmp_path / "gloo")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=mpi_env(), cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 rank(s) (horovod-gloo" in out.stdout + out.stderr
    assert len((tmp_path / "gloo" / "history.csv").read_text().splitlines()) == 2


def test_fp16_gradients_and_no_fusion_train_in_step_and_change_the_numbers_slightly(reference, tmp_path):
    """allreduce.fp16 really sends float16 (the weights differ from fp32's), every rank still agrees."""
    data, run, _ = reference
    out = tmp_path / "fp16"
    res = train_cli(data, out, "--set", "allreduce.fp16=true", "--set", "allreduce.fusion_threshold_mb=0")
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["weights_identical_across_ranks"] is True and metrics["epochs"] == 6
    fp16, fp32 = checkpoint_tensors(out), checkpoint_tensors(run)
    kernel = next(k for k in fp32 if k.startswith("model/") and "kernel" in k)
    assert not np.array_equal(fp16[kernel], fp32[kernel])
    np.testing.assert_allclose(fp16[kernel], fp32[kernel], atol=0.05 * np.abs(fp32[kernel]).max())
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert abs(metrics["final"]["val_accuracy"] - final["val_accuracy"]) < 0.1


def test_gradients_sent_as_they_are_computed_give_the_same_weights_as_sent_together(reference, tmp_path):
    """allreduce.overlap changes when the gradients travel (one group after the backward pass, or each
    as soon as it exists), not what arrives: two ranks' sums are exact either way."""
    data, ref, _ = reference
    res = train_cli(data, tmp_path / "grouped", "--set", "allreduce.overlap=false")
    assert res.returncode == 0, res.stderr
    assert_same_weights(ref, tmp_path / "grouped")


@pytest.mark.parametrize("shard", ["train-00001-of-00004.h5", "val-00000-of-00001.h5"])
def test_a_damaged_shard_one_rank_hashes_stops_every_rank_with_its_name(reference, tmp_path, shard):
    """Ranks share the hashing of the shards (rank 1 hashes train shard 1, rank 0 the val shard); the
    one that finds the damage must not leave the others to die silently or to wait."""
    import h5py

    data = tmp_path / "galaxies"
    shutil.copytree(reference[0], data)
    with h5py.File(data / shard, "r+") as f:  # valid HDF5, wrong bytes: only the checksum can tell
        f["images"][0, 0, 0, 0] ^= 1
    res = train_cli(data, tmp_path / "run")
    errors = [line for line in res.stderr.splitlines() if "error:" in line]
    assert res.returncode == 2 and len(errors) == 2, res.stderr
    assert {e.split("]")[0] for e in errors} == {"cosmotrain [rank 0", "cosmotrain [rank 1"}, res.stderr
    assert all(f"{data / shard} does not match its sha256" in e for e in errors), res.stderr
    assert not (tmp_path / "run").exists()


def test_a_bad_allreduce_setting_is_one_line_on_every_rank_before_any_work(reference, tmp_path):
    data, _, _ = reference
    res = train_cli(data, tmp_path / "bad", "--set", "allreduce.fusion_threshold_mb=-1")
    errors = [line for line in res.stderr.splitlines() if "error:" in line]
    assert res.returncode == 2 and len(errors) == 2, res.stderr
    assert all("allreduce.fusion_threshold_mb must be >= 0" in e for e in errors)
    assert not (tmp_path / "bad").exists()
