"""P7 `cosmotrain bench cmb-scaling`: CMB patch simulation throughput, 2 MPI ranks / 1 rank.

Runs ``cosmotrain data cmb`` twice on the tiny configuration's skies (ℓmax 3500, 480 patches
of 64x64 per sky synthesised from the a_ℓm), under
``mpirun -np 1`` and ``mpirun -np 2``, each rank with one OpenMP thread
(OMP_NUM_THREADS=1: 2 ranks on 2 cores), and reads the simulation time each run records in
its manifest (skies, patches and gathering on rank 0; not interpreter start-up nor the final
HDF5 write). Launches alternate (3 of each); the ratio compares each side's best launch,
the per-launch ratios are printed beside it. All runs must produce identical shards. The
CPU time the ranks got is reported too: on a machine busy with other work, cores_used well
below the rank count explains a low ratio.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cosmotrain.errors import UserError

TARGET = 1.9
SETTINGS = ["seed=7", "maps.nside=1024", "maps.lmax=3500", "maps.fwhm_arcmin=10", "maps.pixwin=true",
            "patches.shape=[64,64]", "patches.reso_arcmin=4", "patches.centers_nside=8", "patches.b_min_deg=20",
            "splits.train=0.5", "splits.val=0.25", "splits.test=0.25", "output.example_patches=4"]


def run(args) -> dict:
    """Measure; returns the figures ``bench.report`` prints and saves."""
    maps, repeats = (4, 1) if args.quick else (8, 3)
    if shutil.which("mpirun") is None:
        raise UserError("mpirun not found; install Open MPI (apt install openmpi-bin) or load its module")
    load = round(os.getloadavg()[0], 2)
    work = Path(tempfile.mkdtemp(prefix="cmb-scaling-"))
    try:
        runs = [(_measure(work / f"np1-{r}", 1, maps), _measure(work / f"np2-{r}", 2, maps)) for r in range(repeats)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    identical = len({json.dumps(m.pop("sha256")) for pair in runs for m in pair}) == 1
    one = max((a for a, _ in runs), key=lambda m: m["patches_per_s"])  # each side's best launch
    two = max((b for _, b in runs), key=lambda m: m["patches_per_s"])
    return {"ratio": round(two["patches_per_s"] / one["patches_per_s"], 3), "target": TARGET,
            "ratios_per_launch": [round(b["patches_per_s"] / a["patches_per_s"], 3) for a, b in runs],
            "higher_is_better": True, "patches_per_s_1rank": one["patches_per_s"],
            "patches_per_s_2ranks": two["patches_per_s"], "seconds_1rank": one["seconds"],
            "seconds_2ranks": two["seconds"], "wall_seconds_1rank": one["wall"], "wall_seconds_2ranks": two["wall"],
            "cores_used_1rank": one["cores_used"], "cores_used_2ranks": two["cores_used"],
            "maps": maps, "patches": one["patches"], "threads_per_rank": 1, "nside": 1024,
            "identical_datasets": identical, "load_average_before": load}


def _measure(out: Path, ranks: int, maps: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    exe = Path(sys.executable).with_name("cosmotrain")
    command = ["mpirun", "-np", str(ranks), "--bind-to", "none", str(exe), "data", "cmb", "--out", str(out),
               "--set", f"maps.n_maps={maps}"]
    for item in SETTINGS:
        command += ["--set", item]
    start, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    patches = sum(split["n"] for split in manifest["splits"].values())
    seconds = float(manifest["simulation_seconds"])
    return {"patches": patches, "seconds": seconds, "patches_per_s": round(patches / seconds, 2),
            "wall": round(wall, 2), "cores_used": round(cpu / wall, 2),
            "sha256": [s["sha256"] for split in manifest["splits"].values() for s in split["shards"]]}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
