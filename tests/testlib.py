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


def tensorboard_scalars(logdir: Path) -> dict:
    """{tag: {step: value}} of the TensorBoard scalars in ``logdir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    events = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    events.Reload()
    return {tag: {e.step: float(make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}
            for tag in events.Tags()["tensors"]}


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


def toy_galaxies(n: int, seed: int, size: int = 16, classes=(0, 1, 2)) -> dict:
    """Learnable toy galaxies: a round blob (0), a bar (1) or a ring (2), with noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(x, y) / size
    shapes = [np.exp(-(r / 0.18) ** 2), np.exp(-(y / (0.06 * size)) ** 2) * (np.abs(x) < 0.4 * size),
              np.exp(-((r - 0.3) / 0.06) ** 2)]
    labels = np.array(classes, dtype=np.int8)[np.arange(n) % len(classes)]
    images = np.stack([shapes[c] for c in labels])[..., None] * rng.uniform(0.6, 1.0, (n, 1, 1, 3))
    images = np.clip(images + rng.normal(0, 0.08, images.shape), 0, 1)
    return {"images": (images * 255).astype(np.uint8), "labels": labels,
            "vote_fractions": np.eye(3, dtype=np.float32)[labels], "ids": np.arange(n, dtype=np.int64) + seed * 10**6}


def toy_cmb(root: Path, side: int = 32, n: int = 128, attrs: dict | None = None) -> Path:
    """``n`` smooth Gaussian training patches of ~100 μK rms (8' pixels) and 40 of another sky for the
    monitors' ``val`` split, written through the shard writer."""
    import numpy as np

    from cosmotrain.data import shards

    rng = np.random.default_rng(0)
    k = np.fft.rfftfreq(side)[None, :] ** 2 + np.fft.fftfreq(side)[:, None] ** 2
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((n + 40, side, side))) * np.exp(-k / 0.01),
                          s=(side, side))
    patches = (100 * field / field.std()).astype(np.float32)
    attrs = attrs if attrs is not None else {"nside": 512, "lmax": 1300, "fwhm_arcmin": 20.0, "reso_arcmin": 8.0,
                                             "cl_source": "toy", "seed": 0}
    shards.write_dataset(root, "cmb", cmb_splits(patches, 40), attrs, config={}, seed=0, samples_per_shard=50)
    return root


def cmb_fields(patches, sky: int = 0) -> dict:
    """The fields of a CMB split for the shard writer: ``patches`` float32 [n, H, W], all from sky ``sky``."""
    import numpy as np

    n = len(patches)
    return {"patches": patches, "centers": np.zeros((n, 2)), "sky": np.full(n, sky, np.int32)}


def cmb_splits(patches, n_val: int) -> dict:
    """A training split and a validation split (the monitors' reference: the last ``n_val`` patches, sky 1)."""
    return {"train": cmb_fields(patches[:-n_val], 0), "val": cmb_fields(patches[-n_val:], 1)}
