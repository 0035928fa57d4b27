"""`cosmotrain validate samples`: the referee (``science.referee``) on a set of patches, across MPI ranks.

SAMPLES is a sample-set folder (made by `sample gan`; every part's sha256 is checked) or
any HDF5 file with a ``patches`` float32 [N, H, W] dataset in μK_CMB; its pixel size
(``reso_arcmin`` attribute, or ``--reso-arcmin``) must be the reference's. A file that also
holds ``sky`` (int32 [N], e.g. a shard of a CMB dataset) is a real set: its patches are
treated as correlated within a sky, like the reference's.

1. Rank 0 reads the reference split (default ``test``: skies no generator was trained
   on) and the training split, builds the probe, and measures both: features per patch,
   per-sky sums, nearest-neighbour distances of the reference to the training patches,
   pair correlations. The probe, the training patches' block means and the memorisation
   threshold go to every rank.
2. Every rank measures a contiguous share of the samples batch by batch; sums are added
   over ranks, so N can be millions.
3. Rank 0 runs the tests and writes FILE.json (every test, a top-level ``pass``) and
   FILE.png beside it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cosmotrain import dist, logs, rundir, sampleplan
from cosmotrain.data import referee_side
from cosmotrain.data.reader import ShardSet, read_manifest
from cosmotrain.errors import UserError
from cosmotrain.plots import validation
from cosmotrain.science import referee
from cosmotrain.science import referee_features as rf

log = logs.get("validate")


class Source(NamedTuple):
    """Where the samples are: HDF5 file, N, shape, pixel size, sky labels (None: independent)."""

    path: Path
    n: int
    shape: tuple
    reso_arcmin: float | None
    sky: np.ndarray | None
    label: str


def validate_samples(samples: str | os.PathLike, reference: str | os.PathLike, split: str = "test",
                     out: str | os.PathLike | None = None, batch: int = 256, reso_arcmin: float | None = None) -> dict:
    """Run the referee on ``samples`` against split ``split`` of CMB dataset ``reference``.

    Every rank calls this and gets the report (rank 0 writes ``out`` and its figure).
    """
    ctx = dist.context()
    source = open_samples(samples, reso_arcmin, ctx.rank, ctx.size)
    built = dist.root_computes(build_reference, reference, split, source, share=False)
    shared = dist.broadcast_object(None if built is None else
                                   (built.probe, built.candidates, referee.memo_threshold(built.distances)))
    local, near, pairs = measure(source, *shared, batch)
    skies = 0 if source.sky is None else len(np.unique(source.sky))
    total = rf.Moments.unpacked(dist.allreduce_sum_array(local.packed()), shared[0].width, skies)
    near = int(dist.allreduce_sum_array(np.array([float(near)]))[0])
    gathered = dist.gather_object(pairs)
    report = None
    if built is not None:
        result = referee.run(total, built.moments, built.train, built.probe, near, built.distances,
                             np.concatenate(gathered), built.pairs)
        report = _report(source, built, split, result)
        _write(Path(out) if out else default_out(samples), report)
    return dist.broadcast_object(report)


def default_out(samples: str | os.PathLike) -> Path:
    """SAMPLES/validation/validation.json for a folder, FILE.validation.json beside a file."""
    path = Path(samples)
    return path / "validation" / "validation.json" if path.is_dir() else path.with_suffix(".validation.json")


# ---------------------------------------------------------------- the samples

def open_samples(samples: str | os.PathLike, reso_arcmin: float | None, rank: int, size: int) -> Source:
    """The samples' file, size, shape, pixel size and sky labels; a folder's parts are checked (shared)."""
    import h5py

    path = Path(samples)
    if path.is_dir():
        manifest = sampleplan.verify(path, rank, size)
        if manifest.get("kind") != "gan-samples":
            raise UserError(f"{path} holds {manifest.get('kind')}, not CMB patches; pass a folder made by "
                            f"'cosmotrain sample gan' or an HDF5 file with a 'patches' dataset")
        path = path / manifest["samples"]
    if not path.is_file():
        raise UserError(f"{samples} is neither a sample-set folder nor an HDF5 file; check the path")
    try:
        with h5py.File(path, "r") as h5:
            return _describe(h5, path, samples, reso_arcmin)
    except OSError as err:
        raise UserError(f"cannot read {path} as HDF5 ({err}); pass a sample-set folder or an HDF5 file") from None


def _describe(h5, path: Path, samples, reso_arcmin: float | None) -> Source:
    if "patches" not in h5 or h5["patches"].ndim != 3:
        raise UserError(f"{path} has no 'patches' dataset of shape [N, H, W]; give a file of CMB patches in μK")
    data = h5["patches"]
    reso = reso_arcmin if reso_arcmin is not None else data.attrs.get("reso_arcmin", h5.attrs.get("reso_arcmin"))
    sky = np.asarray(h5["sky"][:], dtype=np.int64) if "sky" in h5 else None
    if len(data) < 4:
        raise UserError(f"{path} holds {len(data)} patches; the referee needs at least 4")
    return Source(path, len(data), tuple(data.shape[1:]), None if reso is None else float(reso), sky, str(samples))


def measure(source: Source, probe: rf.Probe, candidates: np.ndarray, threshold: float, batch: int):
    """This rank's feature sums, count of samples nearer the training set than ``threshold``, pair correlations."""
    import h5py

    start, stop = dist.share(source.n)
    rows, near, pairs = [], 0, []
    with h5py.File(source.path, "r") as h5, logs.progress(total=stop - start, desc="referee (rank 0's share)",
                                                         unit="sample") as bar:
        for a in range(start, stop, batch):
            x = _finite(h5["patches"][a:min(a + batch, stop)], a, source.path)
            rows.append(rf.features(x, probe))
            near += int(np.sum(rf.nearest_distances(rf.coarse(x), candidates) < threshold))
            if source.sky is None:
                pairs.append(rf.pair_correlations(x))
            bar.update(len(x))
    rows = np.concatenate(rows) if rows else np.zeros((0, probe.width))
    skies = None if source.sky is None else np.unique(source.sky)
    moments = rf.Moments.of(rows, None if source.sky is None else source.sky[start:stop], skies)
    if source.sky is not None and dist.context().rank == 0:  # a real set: pairs from different skies
        pairs.append(_labelled_pairs(source))
    return moments, near, np.concatenate(pairs) if pairs else np.zeros(0)


def _labelled_pairs(source: Source) -> np.ndarray:
    import h5py

    order = rf.cross_sky_order(source.sky, seed=0)
    with h5py.File(source.path, "r") as h5:
        patches = h5["patches"][:]
    return rf.pair_correlations(patches[order])


def _finite(patches: np.ndarray, start: int, path: Path) -> np.ndarray:
    if not np.isfinite(patches).all():
        bad = start + int(np.argwhere(~np.isfinite(patches.reshape(len(patches), -1)))[0, 0])
        raise UserError(f"sample {bad} of {path} is NaN or inf (a missing part reads as NaN); "
                        f"rerun the command that made the set")
    return patches


# ---------------------------------------------------------------- the real side (rank 0)

def build_reference(root: str | os.PathLike, split: str, source: Source) -> referee_side.Reference:
    """Everything the referee needs from the CMB dataset ``root`` (rank 0), once the samples' pixels match it."""
    splits = read_manifest(root).get("splits", {})
    if split in splits:
        _check_pixels(root, ShardSet(root, split, kind="cmb"), source)
    return referee_side.build(root, split)


def _check_pixels(root, real: ShardSet, source: Source) -> None:
    reso = float(real.attrs["reso_arcmin"])
    if real.sample_shape("patches") != source.shape:
        raise UserError(f"{source.label} has {source.shape[0]}x{source.shape[1]} patches, {root} has "
                        f"{real.sample_shape('patches')}; validate against the dataset the samples imitate")
    if source.reso_arcmin is None:
        raise UserError(f"{source.label} does not say its pixel size; add an attribute reso_arcmin to its "
                        f"'patches' dataset or pass --reso-arcmin (the reference's is {reso:g}')")
    if abs(source.reso_arcmin - reso) > 1e-6 * reso:
        raise UserError(f"{source.label} has pixels of {source.reso_arcmin:g}', {root} of {reso:g}'; validate "
                        f"against a dataset of the same pixel size")


# ---------------------------------------------------------------- outputs (rank 0)

def _report(source: Source, built: referee_side.Reference, split: str, result: dict) -> dict:
    probe = built.probe
    std = np.sqrt(np.diag(built.moments.cov)[probe.columns["bp"]]) * probe.bp_ref
    return {"pass": result["pass"], "failed": result["failed"],
            "samples": {"path": str(source.path.resolve()), "n": source.n, "labelled_by_sky": source.sky is not None},
            "reference": built.info, **{k: v for k, v in result.items() if k not in ("pass", "failed")},
            "curves": {"ell": probe.binning.ell.tolist(), "cl_reference": probe.bp_ref.tolist(),
                       "cl_reference_std": std.tolist(), "pdf_edges_sigma": probe.pdf_edges.tolist(),
                       "thresholds_sigma": probe.thresholds.tolist(), "ring_k": probe.ring_k.tolist()}}


def _write(out: Path, report: dict) -> None:
    figure = out.with_suffix(".png")
    report["figure"] = str(figure)
    rundir.write_figure(figure, validation.referee_figure, report, dpi=100)
    rundir.write_json(out, report)
    failed = ", ".join(report["failed"]) or "none"
    log.info("referee: %s (%d samples against %d real patches of split '%s'; failed: %s) -> %s",
             "PASS" if report["pass"] else "FAIL", report["samples"]["n"], report["reference"]["n"],
             report["reference"]["split"], failed, out)
