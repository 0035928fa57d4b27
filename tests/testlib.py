"""Test helpers: run the real console script and real `mpirun` ranks.

A plain module (not conftest.py), so every test folder imports the same one."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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


def mean_ring_powers(patches, matrix):
    """float64 [rings]: the mean ring power of apodised patches float [N, size, size]."""
    from cosmotrain.science import rings

    return rings.patch_ring_powers(patches, matrix).mean(axis=0)


def cmb_fields(patches, sky: int = 0) -> dict:
    """The fields of a CMB split for the shard writer: ``patches`` float32 [n, H, W], all from sky ``sky``."""
    import numpy as np

    n = len(patches)
    return {"patches": patches, "centers": np.zeros((n, 2)), "sky": np.full(n, sky, np.int32)}


def cmb_splits(patches, n_val: int) -> dict:
    """A training split and a validation split (the monitors' reference: the last ``n_val`` patches, sky 1)."""
    return {"train": cmb_fields(patches[:-n_val], 0), "val": cmb_fields(patches[-n_val:], 1)}
