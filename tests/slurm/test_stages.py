"""Every stage's job script running the real `cosmotrain` on the local SLURM, tiny configs.

Each test skips, naming the command, only while `cosmotrain GROUP VERB --help` fails, so
they switch on by themselves as the commands land. Stages feed each other the way a user
chains them: galaxies -> classifier -> predictions; CMB -> GAN -> samples.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from slurm_cluster import REPO, VENV, require_cli

pytestmark = pytest.mark.slurm
N_GALAXIES = 600
# Both classifier runs (straight and pre-empted) train this long; long enough that the
# signal lands after the first epoch and before the last (with 3 epochs, on an idle machine,
# the last two ended within the second SIGUSR1 took to reach the ranks).
TRAIN_ARGS = ["--set", "train.epochs=12"]
# gan_tiny's 1500 steps take 10+ minutes on 2 loaded cores; 100 steps prove the job works.
GAN_ARGS = ["--set", "train.steps=100", "--set", "train.checkpoint_every=50", "--set", "monitor.every=100"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stages")


def env(slurm, work: Path, **extra: str) -> dict:
    return slurm.env(COSMOTRAIN_WORK=str(work / "work"), COSMOTRAIN_VENV=str(VENV), **extra)


def run_stage(slurm, work, script, cli, args=None, **extra) -> Path:
    require_cli(*cli)
    config = extra.get("COSMOTRAIN_CONFIG")
    if config and not Path(config).exists():
        pytest.skip(f"{Path(config).relative_to(REPO)} does not exist yet")
    job = slurm.run(script, work / "logs", env=env(slurm, work, **extra), args=args)
    assert job.rc == 0, f"jobs/{script}.sbatch failed (exit {job.rc}):\n{job.log[-4000:]}"
    return work / "work"


@pytest.fixture(scope="module")
def galaxies(slurm, work) -> Path:
    run_stage(slurm, work, "prepare_galaxies", ("data", "galaxies"), COSMOTRAIN_N_GALAXIES=str(N_GALAXIES))
    return work / "work/data/galaxies"


@pytest.fixture(scope="module")
def cmb(slurm, work) -> Path:
    run_stage(slurm, work, "simulate_cmb", ("data", "cmb"), COSMOTRAIN_CONFIG=f"{REPO}/configs/cmb_tiny.yaml")
    return work / "work/data/cmb"


@pytest.fixture(scope="module")
def classifier_run(slurm, work, galaxies) -> Path:
    run_stage(slurm, work, "train_classifier", ("train", "classifier"), args=TRAIN_ARGS,
              COSMOTRAIN_CONFIG=f"{REPO}/configs/classifier_tiny.yaml")
    return work / "work/runs/classifier"


@pytest.fixture(scope="module")
def gan_run(slurm, work, cmb) -> Path:
    run_stage(slurm, work, "train_gan", ("train", "gan"), args=GAN_ARGS,
              COSMOTRAIN_CONFIG=f"{REPO}/configs/gan_tiny.yaml")
    return work / "work/runs/gan"


def test_prepare_galaxies(galaxies):
    assert (galaxies / "manifest.json").exists()
    assert list(galaxies.glob("*.h5"))


def test_simulate_cmb(cmb):
    assert (cmb / "manifest.json").exists()
    assert list(cmb.glob("*.h5"))


@pytest.mark.parametrize("kind", ["classifier", "gan"])
def test_train(kind, request):
    run = request.getfixturevalue(f"{kind}_run")
    assert (run / "config.yaml").exists()
    assert any((run / "checkpoints").iterdir()), "no checkpoint written"
    assert (run / "history.csv").exists() or (run / "metrics.json").exists()


def test_sample_gan(slurm, work, gan_run):
    out = run_stage(slurm, work, "sample_gan", ("sample", "gan"), COSMOTRAIN_N_SAMPLES="256") / "samples/gan"
    import h5py

    assert (out / "manifest.json").exists() and len(list(out.glob("part-*.h5"))) == 2  # one per rank
    with h5py.File(out / "samples.h5") as f:  # the virtual dataset over both parts
        assert any(d.shape[0] == 256 for d in f.values() if isinstance(d, h5py.Dataset)), dict(f)


def test_predict_classifier(slurm, work, classifier_run):
    # The test split of N_GALAXIES is small: batches small enough for 2 ranks to get one each.
    out = run_stage(slurm, work, "predict_classifier", ("predict", "classifier"),
                    args=["--batch", "16"]) / "predictions/classifier"
    assert any(out.iterdir())


def test_preempted_training_resumes_to_the_same_weights(slurm, work, galaxies, classifier_run):
    """scancel --signal=USR1 --batch mid-run: checkpoint, requeue, --resume, same final weights."""
    run = work / "preempted"
    job_id = slurm.submit("train_classifier", work / "logs", args=TRAIN_ARGS, env=env(
        slurm, work, COSMOTRAIN_CONFIG=f"{REPO}/configs/classifier_tiny.yaml", COSMOTRAIN_CLASSIFIER_RUN=str(run)))
    history = run / "history.csv"
    # After the first epoch is logged the training loop, and its signal handler, is running.
    slurm.wait_for(lambda: history.exists() and len(history.read_text().splitlines()) >= 2,
                   timeout=600, what=f"the first epoch in {history}")
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], env=slurm.env(), check=True)
    rc = slurm.wait(job_id)
    log = slurm.log(work / "logs", job_id)
    assert rc == 0, log[-4000:]
    info = slurm.show(job_id)
    assert info["Restarts"] == "1", f"training finished before the signal arrived, or never requeued:\n{log[-4000:]}"
    assert "resuming from" in log and "exited with code 75" in log, log[-4000:]
    straight, resumed = final_weights(classifier_run), final_weights(run)
    assert straight.keys() == resumed.keys() and straight
    assert resumed.pop("checkpoint") == straight.pop("checkpoint")  # same final step
    for name in straight:
        np.testing.assert_allclose(resumed[name], straight[name], rtol=1e-5, atol=1e-6, err_msg=name)


def final_weights(run: Path) -> dict:
    """The numeric arrays of a run's newest TF checkpoint, by name, plus its name.

    Model and optimizer state are compared; the checkpoint counter and the JSON metadata
    (which records timings) are not.
    """
    import tensorflow as tf

    prefix = tf.train.latest_checkpoint(str(run / "checkpoints"))
    assert prefix, f"no TF checkpoint in {run}/checkpoints"
    reader = tf.train.load_checkpoint(prefix)
    arrays = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
              if "save_counter" not in k and "OBJECT_GRAPH" not in k}
    numeric = {k: v for k, v in arrays.items() if np.asarray(v).dtype.kind in "biuf"}
    return {"checkpoint": Path(prefix).name, **numeric}
