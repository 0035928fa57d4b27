"""`cosmotrain spectra`: the flat-sky band powers of a CMB dataset's patches, against what they should be.

``measure_spectra`` shares the patches out over the ranks, adds their band powers (mean and
scatter) over ranks, and compares them with ``data.theory.dataset_theory``: the input C_ℓ through the
beam and the pixel window (``data.sky.map_spectrum``), plus the white noise, seen through
the apodised estimator (``science.spectra.theory_band_powers``). The patches are the sky
evaluated exactly at their pixel centres, so that expectation holds in every bin up to
the Nyquist ℓ. ``spectra_report`` also writes the JSON and, optionally, the plot (rank 0).
"""
from __future__ import annotations

import os

import numpy as np

from cosmotrain import dist, logs, rundir
from cosmotrain.data.cmb import KIND
from cosmotrain.data.reader import ShardSet
from cosmotrain.data.theory import dataset_theory
from cosmotrain.errors import UserError
from cosmotrain.plots import spectra as spectra_plots
from cosmotrain.science import spectra

MEASURES = ("the mean and patch-to-patch scatter of the flat-sky band powers of the patches as they are "
            "(Hann-apodised, mean removed, C_ell of the beam- and pixel-window-smoothed sky, not deconvolved), "
            "and their exact expectation")


def spectra_report(dataset: str, out: str, plot: str | None = None, **options) -> dict:
    """``measure_spectra(dataset, **options)`` written to ``out`` (JSON) and ``plot`` (PNG) by rank 0."""
    try:
        result = measure_spectra(dataset, **options)
    except ValueError as err:  # bin edges that do not fit the patches
        if isinstance(err, UserError):
            raise
        raise UserError(str(err)) from None
    rundir.write_json(out, result)
    if plot:
        rundir.write_figure(plot, spectra_plots.dataset_band_powers, result, dpi=100)
    logs.get("cmb").info("wrote %s (%d patches, %d bins)%s", out, result["n_patches"], len(result["ell"]),
                         f" and {plot}" if plot else "")
    return result


def measure_spectra(root: str | os.PathLike, split: str = "train", edges: np.ndarray | None = None,
                    window: str = "hann", max_patches: int | None = None, chunk: int = 512) -> dict:
    """Mean and scatter of the flat-sky band powers of a CMB dataset's patches, and theory.

    Ranks (if any) share the patches; every rank returns the same result. Band powers are
    C_ℓ in μK² of the patches as they are (beam and pixel window included).
    """
    data = ShardSet(root, split, kind=KIND, shared=True)
    attrs = data.attrs
    shape = data.sample_shape("patches")
    reso = float(attrs["reso_arcmin"])
    top = spectra.nyquist_ell(reso)
    binning = spectra.make_binning(shape, reso, spectra.default_edges(shape, reso, top) if edges is None else edges,
                                   window)
    n = data.n if max_patches is None else min(int(max_patches), data.n)
    if n < 2:
        raise UserError(f"{root} split {split} has {n} patch(es); need at least 2 to measure a scatter")
    lo, hi = dist.share(n)
    sums = np.zeros(2 * binning.nbins)
    for a in range(lo, hi, chunk):
        bp = spectra.band_powers(data.read(a, min(a + chunk, hi), ("patches",))["patches"], binning)
        sums += np.concatenate([bp.sum(axis=0), (bp**2).sum(axis=0)])
    data.close()
    sums = dist.allreduce_sum_array(sums)
    mean = sums[:binning.nbins] / n
    std = np.sqrt(np.maximum(sums[binning.nbins:] / n - mean**2, 0.0) * n / (n - 1))
    return {"dataset": str(root), "split": split, "n_patches": n, "units": "uK^2 (C_ell, not D_ell)",
            "ell": binning.ell.tolist(), "edges": binning.edges.tolist(), "mean": mean.tolist(),
            "std": std.tolist(), "theory": dataset_theory(root, attrs, binning).tolist(),
            "valid": [True] * binning.nbins, "window": window, "reso_arcmin": reso, "shape": list(shape),
            "measures": MEASURES,
            "theory_model": "C_ell B_ell^2 [P_ell^2 if pixwin] + white noise, through the apodised flat-sky "
                            "estimator (window coupling and aliasing exact)"}
