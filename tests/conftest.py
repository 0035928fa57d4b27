"""Shared test helpers: run the real console script and real `mpirun` ranks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def mpi_env(**extra: str) -> dict:
    """Environment for Open MPI subprocesses (root allowed, quiet TensorFlow)."""
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", TF_CPP_MIN_LOG_LEVEL="2",
               PATH=f"{BIN}:{env.get('PATH', '')}", OMPI_MCA_rmaps_base_oversubscribe="1")
    env.update(extra)
    return env


def run_cli(*args: str, np_: int = 1, timeout: float = 600, cwd: str | Path | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``cosmotrain ARGS`` as one process, or under ``mpirun -np np_`` for np_ > 1."""
    cmd = [str(BIN / "cosmotrain"), *map(str, args)]
    if np_ > 1:
        cmd = ["mpirun", "-np", str(np_), "--bind-to", "none"] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO,
                          env=env or mpi_env())


def run_mpi_python(script: str, np_: int = 2, timeout: float = 300, args: tuple = (),
                   env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a Python snippet on ``np_`` real Open MPI ranks."""
    cmd = ["mpirun", "-np", str(np_), "--bind-to", "none", sys.executable, "-c", script, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or mpi_env())


@pytest.fixture
def tiny_galaxies(tmp_path):
    """A small valid galaxies dataset written through the real shard writer."""
    from cosmotrain.data import shards

    rng = np.random.default_rng(0)

    def split(n, start):
        return {"images": rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8),
                "labels": (np.arange(n) % 3).astype(np.int8),
                "vote_fractions": np.eye(3, dtype=np.float32)[np.arange(n) % 3],
                "ids": np.arange(start, start + n, dtype=np.int64)}

    root = tmp_path / "gal"
    shards.write_dataset(root, "galaxies", {"train": split(103, 0), "val": split(10, 1000)},
                         {"class_names": ["round", "edge-on", "spiral"], "threshold": 0.9, "source": "test"},
                         config={"n": 113}, seed=0, samples_per_shard=40)
    return root
