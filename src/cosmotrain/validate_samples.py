"""Validate a GAN sample set against real CMB patches, across MPI ranks.

The statistics are the GAN monitors' (``science.monitors``), so the numbers mean what they
mean in the training log: binned C_ℓ (mean and scatter), the pixel PDF on fixed edges with
a KS distance, Minkowski functionals at fixed thresholds, each comparison divided by its
sample-variance floor (≈ 1 for a generator as good as real data).

1. Every rank checks the sha256 of its share of the parts against the manifest.
2. Rank 0 reads the reference split: its first half is the target (``reference``), its
   second half the real patches that set the floors (``pool``); it builds the probe (ℓ
   bins, histogram edges, thresholds) and shares it.
3. Every rank measures a contiguous range of ``samples.h5`` batch by batch; the sums are
   added over ranks (``monitors.combine``), so N can be millions. The KS test uses the
   pixels of the first K = min(N, pool size) samples, which are independent draws.
4. Rank 0 scores and writes ``OUT/validation.json`` and ``OUT/validation.png``.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from cosmotrain import config, dist, logs, rundir, sampleplan
from cosmotrain.data.reader import ShardSet
from cosmotrain.errors import UserError
from cosmotrain.plots import validation
from cosmotrain.science import monitors
from cosmotrain.science.monitors import MonitorConfig

log = logs.get("validate")

SUMMARY_KEYS = ("score", "cl_error_over_floor", "ks_over_floor", "ks", "mf_v0_over_floor", "mf_v1_over_floor",
                "mf_v2_over_floor", "variance_ratio", "worst_bin_ell")


def validate_samples(samples_dir: str | os.PathLike, reference: str | os.PathLike, split: str,
                     out_dir: str | os.PathLike, batch: int = 256) -> dict | None:
    """Compare the set in ``samples_dir`` with split ``split`` of CMB dataset ``reference``.

    Every rank calls this; rank 0 writes ``out_dir/validation.{json,png}`` and returns the
    report (other ranks return None).
    """
    ctx = dist.context()
    manifest = sampleplan.verify(samples_dir, ctx.rank, ctx.size)
    shape = _patch_shape(samples_dir, manifest)
    cfg = _monitor_config(manifest)
    built = dist.root_computes(_reference, reference, split, shape, manifest["n"], cfg, share=False)
    probe, k = dist.broadcast_object((built[0].probe, built[1]) if built is not None else None)
    local = _measure(Path(samples_dir) / manifest["samples"], manifest["n"], probe, k, batch)
    total = monitors.combine(local, dist.allreduce_sum_array, dist.gather_object)
    if built is None:  # ranks other than 0: the reference and the scoring are rank 0's
        return None
    result = monitors.score(built[0], total)
    report = _report(samples_dir, reference, split, manifest, built[0], k, result)
    _write(Path(out_dir), report, result)
    log.info("validation of %d samples against %d real patches: %s", manifest["n"], report["reference"]["n"],
             monitors.describe(result))
    return report


def _patch_shape(samples_dir, manifest: dict) -> tuple:
    fields = manifest.get("fields", {})
    if manifest.get("kind") != "gan-samples" or "patches" not in fields:
        raise UserError(f"{samples_dir} holds {manifest.get('kind')}, not GAN patches; pass a folder made by "
                        f"'cosmotrain sample gan'")
    return tuple(fields["patches"][1])


def _monitor_config(manifest: dict):
    """The monitor settings of the GAN run that made the set (its defaults if unknown)."""
    raw = (manifest.get("config") or {}).get("run", {}).get("monitor", {}) or {}
    known = {f.name for f in dataclasses.fields(MonitorConfig)}
    return config.from_dict(MonitorConfig, {k: v for k, v in raw.items() if k in known}, "monitor")


def _reference(root, split: str, shape: tuple, n_samples: int, cfg):
    """(monitors.Reference, K): the real side, built from split ``split`` of ``root``."""
    real = ShardSet(root, split, kind="cmb")
    if real.n < 4:
        raise UserError(f"{root} has {real.n} patches in split '{split}'; the reference needs at least 4")
    if real.sample_shape("patches") != shape:
        raise UserError(f"{root} has {real.sample_shape('patches')} patches, the samples are {shape}; "
                        f"validate against the dataset the GAN was trained on")
    patches = real.read(0, real.n, ("patches",))["patches"].astype(np.float64)
    half = real.n // 2
    k = min(n_samples, real.n - half)
    cfg = dataclasses.replace(cfg, generated=k, group_size=min(cfg.group_size, k), examples=min(cfg.examples, k))
    return monitors.build_reference(patches[:half], patches[half:], float(real.attrs["reso_arcmin"]),
                                    real.attrs.get("lmax"), cfg), k


def _measure(path: Path, n: int, probe, k: int, batch: int):
    """This rank's sums over its contiguous range of the set; pixels only from samples < k."""
    import h5py

    start, stop = dist.share(n)
    parts = []
    with h5py.File(path, "r") as h5:
        bar = logs.progress(total=stop - start, desc="validating (rank 0's share)", unit="sample", unit_scale=True)
        for a in range(start, stop, batch):
            b = min(a + batch, stop)
            sums = probe.measure(_finite(h5["patches"][a:b], a, path), keep_examples=a == 0)
            sums.pixels = sums.pixels[:max(0, k - a) * len(probe.positions)]
            parts.append(sums)
            bar.update(b - a)
        bar.close()
    return _add(parts, probe)


def _finite(patches: np.ndarray, start: int, path: Path) -> np.ndarray:
    if not np.isfinite(patches).all():
        bad = start + int(np.argwhere(~np.isfinite(patches.reshape(len(patches), -1)))[0, 0])
        raise UserError(f"sample {bad} of {path} is NaN or inf (a missing part reads as NaN); "
                        f"rerun the command that made the set")
    return patches


def _add(parts: list, probe):
    """One ``Sums`` from several: numbers added, pixels and examples concatenated."""
    if not parts:  # a rank with no samples (more ranks than samples) adds zeros
        zero = probe.measure(np.zeros((1, *probe.shape)))
        return monitors.Sums(0.0, *(0 * getattr(zero, f) for f in monitors.Sums.NUMERIC),
                             pixels=zero.pixels[:0], examples=zero.examples[:0])
    total = {f: sum(getattr(p, f) for p in parts) for f in ("n", *monitors.Sums.NUMERIC)}
    return monitors.Sums(**total, pixels=np.concatenate([p.pixels for p in parts]),
                         examples=np.concatenate([p.examples for p in parts]))


def _report(samples_dir, reference, split: str, manifest: dict, ref, k: int, result: dict) -> dict:
    return {
        "samples": {"path": str(Path(samples_dir).resolve()), "n": manifest["n"],
                    "model_sha256": manifest["identity"].get("model_sha256"), "seed": manifest["identity"].get("seed"),
                    "parts_verified": len(manifest["parts"])},
        "reference": {"path": str(Path(reference).resolve()), "split": split, "n": int(ref.ref.n),
                      "pool": int(ref.pool.n)},
        "ks_patches": k, "group_size": result["group_size"],
        "summary": {key: result[key] for key in SUMMARY_KEYS},
        "statistics": result,
    }


# ---------------------------------------------------------------- outputs (rank 0)

def _write(out: Path, report: dict, result: dict) -> None:
    report["plot"] = str(out / "validation.png")
    rundir.write_figure(out / "validation.png", validation.summary, result, dpi=100)
    rundir.write_json(out / "validation.json", report)
