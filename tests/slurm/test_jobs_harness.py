"""The job scripts on a real SLURM, with a stand-in `cosmotrain` (stub_cosmotrain.py).

These prove the plumbing the real commands rely on, whatever state the training code is in:
`srun --mpi=pmix` ranks, the mpirun fallback, SIGUSR1 forwarding, checkpoint + requeue +
`--resume`, and the one-line errors. tests/slurm/test_stages.py runs the real commands.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slurm
STUB = Path(__file__).with_name("stub_cosmotrain.py")


@pytest.fixture(scope="module")
def stub(tmp_path_factory) -> dict:
    """A fake virtualenv whose bin/cosmotrain is the stub, and the settings that use it."""
    root = tmp_path_factory.mktemp("stub")
    (root / "venv" / "bin").mkdir(parents=True)
    exe = root / "venv" / "bin" / "cosmotrain"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {STUB} \"$@\"\n")
    exe.chmod(0o755)
    config = root / "tiny.yaml"
    config.write_text("train:\n  epochs: 1\n")
    return {"COSMOTRAIN_VENV": str(root / "venv"), "COSMOTRAIN_CONFIG": str(config)}


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def stub_env(slurm, stub, tmp_path, **extra) -> dict:
    return slurm.env(**stub, COSMOTRAIN_WORK=str(tmp_path / "work"),
                     COSMOTRAIN_STUB_LOG=str(tmp_path / "calls.jsonl"), **extra)


def test_srun_pmix_starts_mpi_ranks(slurm, tmp_path):
    """The harness itself: sbatch --wait, 2 ranks through srun --mpi=pmix, mpi4py allreduce."""
    script = tmp_path / "pmix.sbatch"
    script.write_text(
        "#!/bin/bash\n#SBATCH --ntasks=2\n#SBATCH --cpus-per-task=1\nset -euo pipefail\n"
        f"srun --mpi=pmix {sys.executable} -c '"
        "from mpi4py import MPI; c = MPI.COMM_WORLD; "
        "print(f\"rank {c.rank} of {c.size} sum {c.allreduce(c.rank + 1)}\", flush=True)'\n")
    proc = subprocess.run(["sbatch", "--wait", f"--output={tmp_path}/pmix-%j.out", str(script)],
                          env=slurm.env(), text=True, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = "".join(p.read_text() for p in tmp_path.glob("pmix-*.out"))
    assert "rank 0 of 2 sum 3" in out and "rank 1 of 2 sum 3" in out, out


def test_every_stage_script_runs_in_order(slurm, stub, tmp_path):
    """All six job scripts, each reading what the previous wrote, with the right arguments."""
    env = stub_env(slurm, stub, tmp_path, COSMOTRAIN_N_GALAXIES="96", COSMOTRAIN_N_SAMPLES="64",
                   COSMOTRAIN_STUB_STEPS="2")
    for script in ["prepare_galaxies", "simulate_cmb", "train_classifier", "train_gan",
                   "sample_gan", "predict_classifier"]:
        job = slurm.run(script, tmp_path / "logs", env=env, args=["--set", "a.b=1"])
        assert job.rc == 0, f"{script} failed:\n{job.log}"
    work = tmp_path / "work"
    by_verb = {tuple(c["argv"][:2]): c for c in calls(tmp_path / "calls.jsonl") if c["rank"] == 0}
    assert by_verb[("data", "galaxies")]["argv"] == [
        "data", "galaxies", "--synthetic", "96", "--out", f"{work}/data/galaxies", "--set", "a.b=1"]
    assert by_verb[("data", "galaxies")]["size"] == 1
    train = by_verb[("train", "classifier")]
    assert train["size"] == 2 and "--resume" not in train["argv"]
    assert train["argv"][:4] == ["train", "classifier", "--out", f"{work}/runs/classifier"]
    assert by_verb[("sample", "gan")]["argv"][2:6] == ["--run", f"{work}/runs/gan", "--n", "64"]
    assert json.loads((work / "samples/gan/manifest.json").read_text()) == {"n": 64}
    assert (work / "predictions/classifier/predictions.json").exists()


def test_preempted_training_requeues_and_resumes_to_the_same_weights(slurm, stub, tmp_path):
    """USR1 to the batch shell -> ranks checkpoint, exit 75 -> requeue -> --resume -> same end."""
    (tmp_path / "work/data/galaxies").mkdir(parents=True)
    steps = "24"
    run = tmp_path / "work/runs/classifier"
    job_id = slurm.submit("train_classifier", tmp_path / "logs",
                          env=stub_env(slurm, stub, tmp_path, COSMOTRAIN_STUB_STEPS=steps))
    progress = run / "progress"
    slurm.wait_for(lambda: progress.exists() and int(progress.read_text() or 0) >= 4, what="training steps")
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], env=slurm.env(), check=True)
    rc = slurm.wait(job_id)
    log = slurm.log(tmp_path / "logs", job_id)

    assert rc == 0, log
    info = slurm.show(job_id)
    assert (info["JobState"], info["Restarts"]) == ("COMPLETED", "1"), info
    assert f"requeueing job {job_id} after SIGUSR1" in log and "resuming from" in log, log
    starts = [c for c in calls(tmp_path / "calls.jsonl") if c["rank"] == 0 and c["argv"][0] == "train"]
    assert [("--resume" in c["argv"], c["restart"]) for c in starts[-2:]] == [(False, 0), (True, 1)]
    straight = np.zeros(4)
    for step in range(int(steps)):  # the stub's training, uninterrupted
        straight = 0.9 * straight + np.sin(step + np.arange(4))
    np.testing.assert_array_equal(np.load(run / "weights.npy"), straight)


def test_a_time_limit_requeues_and_resumes_to_the_same_weights(slurm, stub, tmp_path):
    """The time limit: SIGTERM to every process, SIGKILL KillWait (10 s) later -> checkpoint, requeue,
    --resume, until the run is done (each 1-minute start moves it on by >= 200 steps)."""
    (tmp_path / "work/data/galaxies").mkdir(parents=True)
    steps = 480  # 0.25 s each: 2 minutes, so the 1-minute limit cuts it at least once
    run = tmp_path / "work/runs/classifier"
    no_warning = "--signal=B:CONT@1"  # replaces the script's USR1 ten minutes ahead: only the limit itself
    job_id = slurm.submit("train_classifier", tmp_path / "logs", flags=["--time=1", no_warning],
                          env=stub_env(slurm, stub, tmp_path, COSMOTRAIN_STUB_STEPS=str(steps)))
    rc = slurm.wait(job_id, timeout=600)
    log = slurm.log(tmp_path / "logs", job_id)

    assert rc == 0, log
    assert int(slurm.show(job_id)["Restarts"]) >= 1, log
    assert f"requeueing job {job_id} after SIGTERM" in log and "resuming from" in log, log
    straight = np.zeros(4)
    for step in range(steps):
        straight = 0.9 * straight + np.sin(step + np.arange(4))
    np.testing.assert_array_equal(np.load(run / "weights.npy"), straight)


def test_mpirun_launcher_starts_the_same_ranks(slurm, stub, tmp_path):
    (tmp_path / "work/data/cmb").mkdir(parents=True)
    job = slurm.run("train_gan", tmp_path / "logs",
                    env=stub_env(slurm, stub, tmp_path, COSMOTRAIN_LAUNCHER="mpirun", COSMOTRAIN_STUB_STEPS="2"))
    assert job.rc == 0, job.log
    assert "launch: mpirun -np 2" in job.log
    ranks = sorted((c["rank"], c["size"]) for c in calls(tmp_path / "calls.jsonl"))
    assert ranks == [(0, 2), (1, 2)]


def test_missing_image_fails_at_once_with_one_line(slurm, stub, tmp_path):
    job = slurm.run("prepare_galaxies", tmp_path / "logs",
                    env=stub_env(slurm, stub, tmp_path, COSMOTRAIN_SIF="/nonexistent/cosmotrain.sif"))
    assert job.rc == 1
    errors = [line for line in job.log.splitlines() if "error" in line]
    assert errors == ["cosmotrain-job: error: COSMOTRAIN_SIF=/nonexistent/cosmotrain.sif: no such image file "
                      "(build one: apptainer build cosmotrain.sif singularity/cosmotrain.def)"], job.log
    assert not (tmp_path / "calls.jsonl").exists()


def test_unbound_data_path_names_the_bind_to_add(slurm, stub, tmp_path):
    """With a stand-in apptainer that binds only $HOME, /tmp, $PWD and $APPTAINER_BIND."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "apptainer").write_text(FAKE_APPTAINER)
    (fake / "apptainer").chmod(0o755)
    sif = tmp_path / "cosmotrain.sif"
    sif.write_bytes(b"")
    data = Path("/var/tmp") / f"cosmotrain-bind-test-{tmp_path.name}"
    (data / "galaxies").mkdir(parents=True, exist_ok=True)
    try:
        env = stub_env(slurm, stub, tmp_path, COSMOTRAIN_SIF=str(sif), COSMOTRAIN_GALAXIES=f"{data}/galaxies",
                       COSMOTRAIN_STUB_STEPS="1", FAKE_CONTAINER_PATH=f"{stub['COSMOTRAIN_VENV']}/bin")
        env["PATH"] = f"{fake}:{env['PATH']}"
        job = slurm.run("train_classifier", tmp_path / "logs", env=env)
        assert job.rc == 1
        assert (f"cosmotrain-job: error: {data}/galaxies is not visible inside the container: "
                "bind it (export APPTAINER_BIND=/var) and resubmit") in job.log
        env["APPTAINER_BIND"] = "/var/tmp"
        job = slurm.run("train_classifier", tmp_path / "logs", env=env)
        assert job.rc == 0, job.log
        assert "launch: srun --mpi=pmix" in job.log and f"apptainer exec {sif} cosmotrain" in job.log
    finally:
        subprocess.run(["rm", "-rf", str(data)], check=False)


FAKE_APPTAINER = r"""#!/bin/bash
# Stand-in for `apptainer exec [--nv] SIF CMD...`: "binds" $HOME, /tmp, $PWD, $APPTAINER_BIND.
set -eo pipefail
[ "$1" = exec ] && shift
[ "$1" = --nv ] && shift
shift  # the image
visible() {
  local b
  for b in "$HOME" /tmp "$PWD" ${APPTAINER_BIND//,/ }; do
    b=${b%%:*}
    case $1/ in "$b"/*) return 0 ;; esac
  done
  return 1
}
if [ "$1" = /bin/sh ]; then  # jobs/env.sh asks which paths the container cannot see
  shift 4  # /bin/sh -c SCRIPT sh
  for p in "$@"; do visible "$p" || echo "$p"; done
  exit 0
fi
PATH=$FAKE_CONTAINER_PATH:$PATH exec "$@"
"""
