"""Helpers for the SLURM tests: submit the job scripts, wait for them, read their state."""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JOBS = REPO / "jobs"
SLURM_DIR = os.environ.get("COSMOTRAIN_SLURM_DIR", "/tmp/cosmotrain-slurm")
VENV = Path(sys.executable).parent.parent

# The scripts' production #SBATCH lines ask for GPUs and many cores; this node has 2 cores,
# no GPUs. These flags scale each job down (and prove the lines can be overridden).
SMALL = {
    "prepare_galaxies": ["--cpus-per-task=1"],
    "simulate_cmb": ["--ntasks-per-node=2", "--cpus-per-task=1"],
    "train_classifier": ["--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-node=0"],
    "train_gan": ["--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-node=0"],
    "sample_gan": ["--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-node=0"],
    "predict_classifier": ["--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-node=0"],
}


FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


@dataclasses.dataclass
class Job:
    id: str
    rc: int
    log: str


@dataclasses.dataclass
class Cluster:
    conf: str

    def env(self, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env.update(SLURM_CONF=self.conf, TF_CPP_MIN_LOG_LEVEL="2", PATH=f"{VENV / 'bin'}:{env['PATH']}")
        env.update(extra)
        return env

    def submit(self, script: str, out_dir: Path, flags: list[str] | None = None,
               args: list[str] | None = None, env: dict | None = None) -> str:
        """sbatch jobs/SCRIPT.sbatch, scaled down to this node; returns the job id."""
        out_dir.mkdir(parents=True, exist_ok=True)
        cmd = ["sbatch", "--parsable", f"--output={out_dir}/%x-%j.out",
               *SMALL.get(script, []), *(flags or []), str(JOBS / f"{script}.sbatch"), *(args or [])]
        res = subprocess.run(cmd, cwd=REPO, env=env or self.env(), text=True, capture_output=True)
        assert res.returncode == 0, f"sbatch {script} refused the job: {res.stderr}"
        return res.stdout.strip().split(";")[0]

    def wait(self, job_id: str, timeout: float = 900) -> int:
        """Wait until the job has ended for good (through any requeue); its exit code.

        Like `sbatch --wait`, but polling every half second instead of at 2, 6, 14, 30 s...
        """
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            info = self.show(job_id)
            if info["JobState"] in FINAL_STATES:
                rc, sig = (int(x) for x in info["ExitCode"].split(":"))
                return rc or (128 + sig if sig else 0) or (0 if info["JobState"] == "COMPLETED" else 1)
            time.sleep(0.5)
        subprocess.run(["scancel", job_id], env=self.env(), check=False)
        raise AssertionError(f"job {job_id} still not done after {timeout:.0f} s: {self.show(job_id)}")

    def run(self, script: str, out_dir: Path, timeout: float = 900, **kw) -> Job:
        """Submit, wait for the job to end; its exit code and log."""
        job_id = self.submit(script, out_dir, **kw)
        rc = self.wait(job_id, timeout)
        return Job(job_id, rc, self.log(out_dir, job_id))

    @staticmethod
    def log(out_dir: Path, job_id: str) -> str:
        logs = list(out_dir.glob(f"*-{job_id}.out"))
        return logs[0].read_text() if logs else ""

    def show(self, job_id: str) -> dict:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...)."""
        out = subprocess.run(["scontrol", "-o", "show", "job", job_id], env=self.env(), text=True,
                             capture_output=True, check=True).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait_for(self, predicate, timeout: float = 300, what: str = "condition") -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def cli_available(*words: str) -> bool:
    """True when `cosmotrain WORDS --help` shows that command's own usage."""
    exe = VENV / "bin" / "cosmotrain"
    if not exe.exists():
        return False
    res = subprocess.run([str(exe), *words, "--help"], capture_output=True, text=True, timeout=120)
    return res.returncode == 0 and f"usage: cosmotrain {' '.join(words)}" in res.stdout


def require_cli(*words: str) -> None:
    if not cli_available(*words):
        pytest.skip(f"`cosmotrain {' '.join(words)}` does not exist yet (its --help fails)")
