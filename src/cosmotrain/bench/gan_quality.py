"""`cosmotrain bench gan-quality`: does a CPU-trained DCGAN pass the referee on skies it never saw?

Makes the tiny CMB dataset (``configs/cmb_tiny.yaml``: 2880 training patches of 64x64 at
4' from 6 skies, 2 validation skies, 2 test skies), trains ``configs/gan_referee.yaml``
(``--quick``: ``configs/gan_tiny.yaml``, the demo's run) on 2 MPI ranks (one thread each)
and judges its final and its best checkpoint (the one the
referee on the validation skies picked during training, ``monitor.best_by``) the way the
issue asks: ``--latent-sets`` fresh sets (default 20) of ``--set-size`` latents (default
1024), each set's patches put to every referee test (``data.referee_side.judge``, the
tests of ``validate samples``) against the test skies, through the calibration filter
(``train.calibration``) and without it. It reports, per checkpoint and filter, the share
of sets passing each test and passing all of them (real sets of 1024 pass all ≥ 95 % of
the time, docs/cmb.md), the training time, steps per second on the 2 ranks, and G's own
power on the Nyquist lines of its inner grids. The headline ``ratio`` is the final
checkpoint's whole-referee pass rate with the filter (target 0.8). Time on a quiet 2-core
machine: training (6000 steps, about 30 min; ``--quick``: 2000, about 6 min) plus about
8 s per set, checkpoint and filter. The dataset and the run stay in a temporary folder
(its path is in the result).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cosmotrain import config
from cosmotrain.errors import UserError

TARGET, TARGET_UNFILTERED = 0.8, 0.5  # pass rates of the whole referee over fresh latent sets (issue G2)
FULL, QUICK = "gan_referee.yaml", "gan_tiny.yaml"  # the shipped config for the referee; the demo's
LATENT_SETS, SET_SIZE, LATENT_SEED = 20, 1024, 99


def run(args) -> dict:
    """Train and measure; returns the figures ``bench.report`` prints and saves."""
    name = QUICK if args.quick else FULL
    sets, size = _sizes(args)
    from cosmotrain.train.gan_config import GanConfig  # TensorFlow: only once the benchmark runs
    config.load(GanConfig, _config(name), args.overrides)  # a wrong --set fails here
    if shutil.which("mpirun") is None:
        raise UserError("mpirun not found; install Open MPI (apt install openmpi-bin) or load its module")
    work = Path(tempfile.mkdtemp(prefix="gan-quality-"))
    load = os.getloadavg()[0]
    data_seconds = _command(["data", "cmb", "--config", _config("cmb_tiny.yaml"), "--out", str(work / "cmb")])
    overrides = list(args.overrides)
    train_seconds = _command(["train", "gan", "--config", _config(name), "--data", str(work / "cmb"),
                              "--out", str(work / "run"), *[a for o in overrides for a in ("--set", o)]])
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    judged = judge_run(work / "run", work / "cmb", "test", sets, size)
    final = judged["final"]["filtered"]["all"]
    return {"ratio": final, "target": TARGET, "higher_is_better": True,
            "goals_met": final >= TARGET and judged["final"]["unfiltered"]["all"] >= TARGET_UNFILTERED,
            "target_unfiltered": TARGET_UNFILTERED, **judged,
            "best_step": metrics["best_step"], "best_by": metrics.get("best_by", "monitors"),
            "steps": metrics["steps"], "ranks": metrics["ranks"], "global_batch": metrics["global_batch"],
            "train_seconds": round(metrics["train_seconds"], 1),
            "steps_per_second": round(metrics["steps"] / max(metrics["train_seconds"], 1e-9), 3),
            "train_wall_seconds": round(train_seconds, 1), "data_wall_seconds": round(data_seconds, 1),
            "quick": bool(args.quick), "config": name, "threads_per_rank": 1, "overrides": overrides,
            "load_average_before": round(load, 2), "run": str(work / "run"), "plots": metrics["plots"]}


def _sizes(args) -> tuple[int, int]:
    """(latent sets, patches per set) from ``--latent-sets`` and ``--set-size``; refused when too small."""
    sets = getattr(args, "latent_sets", None) or LATENT_SETS
    size = getattr(args, "set_size", None) or SET_SIZE
    if sets < 1 or size < 4:
        raise UserError(f"--latent-sets must be >= 1 and --set-size >= 4 (the referee needs 4 patches), got "
                        f"{sets} and {size}")
    return sets, size


def judge_run(run: Path, data: Path, split: str, sets: int, size: int) -> dict:
    """Pass rates of the referee against ``split`` of ``data`` for the run's final and best checkpoints.

    ``{"final" | "best": {"filtered" | "unfiltered": pass_rates(...)}, "nyquist_lines": ...,
    "validation_badness": ...}``; both checkpoints see the same ``sets`` latent sets of
    ``size``. One process, no MPI.
    """
    from cosmotrain.data import referee_side
    from cosmotrain.inference import load_generator
    reference = referee_side.build(data, split)
    out = {"split": split, "latent_sets": sets, "set_size": size, "seed": LATENT_SEED,
           "validation_badness": validation_badness(run)}
    for name, which in (("final", "latest"), ("best", "best")):
        generator = load_generator(run, which)
        out[name] = {"step": generator.info["step"], "filtered": pass_rates(reference, generator, sets, size),
                     "unfiltered": pass_rates(reference, without_calibration(generator), sets, size)}
        if name == "final":
            out["nyquist_lines"] = nyquist_lines(without_calibration(generator), reference)
    return out


def validation_badness(run: Path) -> dict[int, float]:
    """{step: the referee's badness on the validation skies} at each monitor of the run (``history.csv``).

    It reads a run's course at a glance: two seeds of one config (``train.seed``) parted from
    the first monitor on, by 2–10 × at every one (docs/gan.md, G2). Empty when the run's
    checkpoints were chosen by the monitors (``monitor.best_by``).
    """
    from cosmotrain.rundir import read_history_rows
    return {int(r["step"]): round(float(r["referee_badness"]), 3) for r in read_history_rows(run / "history.csv")
            if r.get("referee_badness")}


def without_calibration(generator):
    """The same generator without its calibration filter (``train.calibration``): G's patches as they are."""
    plain = copy.copy(generator)
    plain.gains = None
    return plain


def pass_rates(reference, generator, sets: int, size: int) -> dict:
    """Share of ``sets`` fresh latent sets of ``size`` whose patches pass each referee test, and all of them.

    ``{"all": share, "tests": {name: share}, "median_p": {name: median p-value}}``: the sets
    come from ``LATENT_SEED``, so the final and the best checkpoint meet the same latents.
    """
    import numpy as np
    from cosmotrain.data import referee_side
    rng = np.random.default_rng(LATENT_SEED)
    return shares([referee_side.judge(reference, generator(rng.standard_normal((size, generator.latent_dim))
                                                             .astype(np.float32))) for _ in range(sets)])


def shares(verdicts: list[dict]) -> dict:
    """``{"all": share, "tests": {name: share}, "median_p": {name: median p-value}}`` over referee verdicts."""
    import numpy as np
    from cosmotrain.science.referee import TESTS
    passed = {name: np.mean([v["tests"][name]["pass"] for v in verdicts]) for name in TESTS}
    return {"all": float(np.mean([v["pass"] for v in verdicts])), "tests": {k: float(v) for k, v in passed.items()},
            "median_p": {name: float(np.median([v["tests"][name]["p_value"] for v in verdicts])) for name in TESTS}}


def nyquist_lines(generator, reference, patches: int = 4096) -> list[dict]:
    """Generated ÷ reference 2D power on each of G's inner grids' Nyquist lines, and off them.

    G doubles its maps from ``base_size`` up; a map of side s carries no phase of its own on
    the lines |k_x| or |k_y| = s/2 fundamentals of G's canvas, which the later layers have to
    make up (``spectra.line_power_ratio``), measured on ``patches`` patches of G alone. With
    ``model.margin`` the patch is the canvas's centre, and the lines lie at s/2 · patch/canvas
    of the patch's fundamentals: sides whose lines fall between the patch's modes are left out.
    """
    import numpy as np
    from cosmotrain.data.reader import ShardSet
    from cosmotrain.models.dcgan import ModelConfig, canvas, upsamplings
    from cosmotrain.science import spectra
    model = config.from_dict(ModelConfig, generator.info["model"])
    real = ShardSet(reference.info["path"], reference.info["split"], kind="cmb")
    real = real.read(0, real.n, ("patches",))["patches"]
    z = np.random.default_rng(LATENT_SEED).standard_normal((patches, generator.latent_dim)).astype(np.float32)
    made = generator(z)
    lines = {s: s * model.image_size // (2 * canvas(model)) for s in
             (model.base_size * 2**j for j in range(1, upsamplings(model)))
             if s * model.image_size % (2 * canvas(model)) == 0}
    return [dict(zip(("side", "on_lines", "rest_of_rings"), (s, *[round(r, 3) for r in
                 spectra.line_power_ratio(made, real, k)]))) for s, k in lines.items() if k >= 2]


def _config(name: str) -> str:
    return str(config.shipped(name))


def _command(arguments: list[str]) -> float:
    """``mpirun -np 2 cosmotrain ARGS`` with one thread per rank; returns its wall time (s)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", TF_CPP_MIN_LOG_LEVEL="2")
    exe = Path(sys.executable).with_name("cosmotrain")
    command = ["mpirun", "-np", "2", "--bind-to", "none", str(exe), *arguments]
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start
