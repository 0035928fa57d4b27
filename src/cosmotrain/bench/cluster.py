"""The multi-node benchmarks' cluster: scripts/cluster/ brought up, shaped and torn down.

``cluster(nodes)`` starts an N-node SLURM cluster on this machine (``scripts/cluster/up.sh``:
network namespaces with their own IPs, one slurmd each) unless one is up already, and on
leaving (also on SIGTERM or Ctrl-C) removes what it started (``down.sh``), or leaves the
links of a cluster it found unshaped again. ``Cluster.srun``
launches one rank per node and returns what rank 0 (or every process) printed as JSON.
Benchmark files go under the cluster's shared folder: every node hides /tmp behind its own.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from cosmotrain.errors import UserError

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = REPO / "scripts" / "cluster"


@dataclasses.dataclass
class Cluster:
    """A running cluster: its slurm.conf and folder."""

    conf: str
    folder: Path

    def env(self, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env.update(SLURM_CONF=self.conf, TF_CPP_MIN_LOG_LEVEL="2", **extra)
        return env

    def shape(self, mbit: int) -> int:
        """Every node's link limited to ``mbit`` Mbit/s each way (0 = unshaped); the shaper's
        bucket in bytes, what a link passes at once after an idle (0 when unshaped)."""
        _script("shape.sh", str(mbit), env=self.env())
        return int((self.folder / "burst").read_text())

    def srun(self, nodes: int, code: str, *args: str, mpi: bool = True, timeout: float = 3600) -> list[dict]:
        """``python -c code args`` on ``nodes`` nodes, one single-threaded rank each; the JSON lines printed.

        ``mpi=False`` starts independent single processes (``--mpi=none``: each is its own
        one-rank job), to measure what the nodes' ranks cost each other without talking.
        """
        cmd = ["srun", "-N", str(nodes), "--ntasks-per-node=1", "--cpus-per-task=1", "--exclusive",
               f"--mpi={'pmix' if mpi else 'none'}", "--kill-on-bad-exit=1", sys.executable, "-c", code, *args]
        done = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:8])} ... failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]

    def scratch(self) -> tempfile.TemporaryDirectory:
        """A temporary folder every node sees."""
        shared = self.folder / "shared"
        shared.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix="bench-", dir=shared)


@contextlib.contextmanager
def cluster(nodes: int) -> Iterator[Cluster]:
    """An N-node cluster for the block; torn down afterwards if this call started it."""
    if not (SCRIPTS / "up.sh").is_file():
        raise UserError("this benchmark starts the multi-node cluster of scripts/cluster/: run it from a "
                        "cosmotrain checkout (pip install -e .)")
    if os.geteuid() != 0:
        raise UserError("this benchmark starts a SLURM cluster in network namespaces, which needs root")
    folder = Path(os.environ.get("COSMOTRAIN_CLUSTER_DIR", "/var/tmp/cosmotrain-cluster"))
    started = not (folder / "created").is_file()
    previous = signal.signal(signal.SIGTERM, _exit_on_term)  # so the teardown below runs
    running = None
    try:
        running = Cluster(_script("up.sh", str(nodes)).strip().splitlines()[-1], folder)
        yield running
    finally:
        if started:
            _script("down.sh", check=False)
        elif running is not None:  # a cluster someone else started: leave its links unshaped
            _script("shape.sh", "0", env=running.env(), check=False)
        signal.signal(signal.SIGTERM, previous)


def leave_job_step() -> None:
    """In a process started by ``srun --mpi=none``: forget the job step, so that MPI (Horovod)
    starts as a one-rank job of its own instead of looking for the step's other ranks."""
    for name in [k for k in os.environ if k.startswith(("SLURM_", "PMIX_", "PMI_", "OMPI_"))]:
        del os.environ[name]


def _exit_on_term(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _script(name: str, *args: str, env: dict | None = None, check: bool = True) -> str:
    done = subprocess.run(["bash", str(SCRIPTS / name), *args], env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"scripts/cluster/{name} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout
