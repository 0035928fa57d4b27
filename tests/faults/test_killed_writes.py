"""kill -9 in the middle of a write: a checkpoint, a dataset, a sample set. Finding F9 and the
kill -9 classes of the issue: nothing written before is damaged, and the rerun finishes."""
import json
import re

import h5py
import numpy as np

from faultlib import CLASSIFIER, Job, cli, latest_checkpoint, snapshot

BIG = ["--set", "model.dense=[4096, 512]", "--set", "train.keep_checkpoints=1"]  # 36 MB checkpoints: slow to write


def test_kill_9_during_a_checkpoint_write_keeps_the_last_checkpoint(galaxies, tmp_path):
    run = tmp_path / "run"
    job = Job("train", "classifier", *CLASSIFIER, *BIG, "--data", galaxies, "--out", run, "--set", "train.epochs=100",
              log=tmp_path / "log")
    previous = job.wait_for(lambda: latest_checkpoint(run), "the first checkpoint", every=0.01)
    job.wait_for(lambda: list((run / "checkpoints").glob("ckpt-*_temp*")), "a checkpoint being written", every=0.002)
    job.kill()
    assert list((run / "checkpoints").glob("ckpt-*_temp*")), "the kill came after the write: try again"
    step = latest_checkpoint(run)
    assert step >= previous and (run / "checkpoints" / f"ckpt-{step}.index").is_file()
    out = cli("train", "classifier", "--data", galaxies, "--out", run, "--resume", "--set",
              f"train.epochs={step // 24 + 1}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resumed from {run}/checkpoints/ckpt-{step}" in out.stderr


def test_kill_9_during_a_dataset_write_keeps_the_old_dataset(tmp_path):
    """F9: `data galaxies --overwrite` killed between shard writes must not mix old and new."""
    data = tmp_path / "galaxies"
    assert cli("data", "galaxies", "--synthetic", "60", "--out", data).returncode == 0
    before = snapshot(data)
    job = Job("data", "galaxies", "--synthetic", "3000", "--out", data, "--overwrite", "--set",
              "dataset.samples_per_shard=300", log=tmp_path / "log")
    staged = job.wait_for(lambda: list(tmp_path.glob(".galaxies.staging-*/train-*.h5")), "a shard of the new dataset",
                          every=0.002)
    job.kill()
    assert staged and snapshot(data) == before  # the old dataset, every file as it was
    checked = cli("validate", "dataset", data)
    assert checked.returncode == 0 and "all intact" in checked.stdout
    assert list(tmp_path.glob(".galaxies.staging-*"))  # what the kill left...
    again = cli("data", "galaxies", "--synthetic", "90", "--out", data, "--overwrite")
    assert again.returncode == 0, again.stderr[-3000:]
    assert not list(tmp_path.glob(".galaxies.*"))  # ... the next run removed
    assert sum(s["n"] for s in json.loads((data / "manifest.json").read_text())["splits"].values()) == 90


def test_a_first_dataset_write_killed_does_not_block_the_rerun(tmp_path):
    """F4 for `data galaxies`: leftovers of a killed run are cleaned, not mistaken for a dataset."""
    data = tmp_path / "galaxies"
    job = Job("data", "galaxies", "--synthetic", "3000", "--out", data, log=tmp_path / "log")
    job.wait_for(lambda: list(tmp_path.glob(".galaxies.staging-*/train-*.h5")), "a shard", every=0.002)
    job.kill()
    out = cli("data", "galaxies", "--synthetic", "60", "--out", data)
    assert out.returncode == 0, out.stderr[-3000:]
    assert cli("validate", "dataset", data).returncode == 0


def test_kill_9_during_a_sample_write_then_the_rerun_finishes_the_same_set(gan_run, tmp_path):
    samples, whole = tmp_path / "samples", tmp_path / "whole"
    # Batches are marked done every 2 s (sampleset.COMMIT_SECONDS) and the tiny generator makes
    # ~13 000 patches/s on 2 idle ranks: 150 000 leave most of the set undone at the first mark.
    n = 150_000
    args = ("sample", "gan", "--run", gan_run, "--checkpoint", "latest", "--n", str(n), "--batch", "500")
    job = Job(*args, "--out", samples, np_=2, log=tmp_path / "log")
    job.wait_for(lambda: all((samples / f"part-0000{r}.h5").is_file() for r in (0, 1)), "both parts", every=0.01)
    job.wait_for(lambda: any(h5_done(samples / f"part-0000{r}.h5") for r in (0, 1)), "a batch marked done")
    job.kill()
    assert not (samples / "manifest.json").exists()
    rerun = cli(*args, "--out", samples, np_=2)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    made = int(re.search(r"\((\d+) made now", rerun.stdout).group(1))
    assert 0 < made < n  # only what the kill left undone
    assert cli(*args, "--out", whole).returncode == 0
    with h5py.File(samples / "samples.h5") as a, h5py.File(whole / "samples.h5") as b:
        assert np.array_equal(a["patches"][:], b["patches"][:])


def h5_done(path) -> bool:
    """True once the part at ``path`` has a batch marked done (read without disturbing the writer)."""
    try:
        with h5py.File(path, "r") as h5:
            return bool(h5["done"][:].any())
    except (OSError, KeyError):
        return False
