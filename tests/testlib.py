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


def resign(root: str | Path) -> None:
    """Rewrite a dataset's manifest so its sha256 and sizes match the shards as they are now:
    what a dataset made or edited by another tool looks like (the contents are not checked)."""
    import json

    from cosmotrain.files import sha256

    path = Path(root) / "manifest.json"
    manifest = json.loads(path.read_text())
    for entry in manifest["splits"].values():
        for shard in entry["shards"]:
            shard.update(sha256=sha256(Path(root) / shard["file"]), bytes=(Path(root) / shard["file"]).stat().st_size)
    path.write_text(json.dumps(manifest))


def set_values(root: str | Path, shard: str, field: str, index, value) -> None:
    """Put ``value`` at ``index`` of dataset ``field`` in ``shard`` of the dataset ``root``, then ``resign`` it."""
    import h5py

    with h5py.File(Path(root) / shard, "a") as h5:
        h5[field][index] = value
    resign(root)
