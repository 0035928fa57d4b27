"""`cosmotrain spectra`: the flat-sky band powers of a CMB dataset's patches, against what they should be.

``measure_spectra`` shares the patches out over the ranks, adds their band powers (mean and
scatter) over ranks, and compares them with ``data.theory.dataset_theory``: the input C_ℓ through the
beam, the pixel windows and the nearest-pixel projection, seen through the apodised estimator. ``spectra_report``
also writes the JSON and, optionally, the plot (rank 0).
"""
from __future__ import annotations

import os

import numpy as np

from cosmotrain import dist, logs, rundir
from cosmotrain.data.cmb import KIND
from cosmotrain.data.reader import ShardSet
from cosmotrain.data.sky import valid_lmax
from cosmotrain.data.theory import dataset_theory
from cosmotrain.errors import UserError
from cosmotrain.plots import spectra as spectra_plots
from cosmotrain.science import spectra
from cosmotrain.science.spectra import beam_window, pixel_window


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


def dataset_transfer(attrs: dict, lmax: int) -> np.ndarray:
    """What the patches' signal went through, as an amplitude ``T_ℓ`` (float64 [lmax+1]).

    Beam × (pixel window if the maps had it) × pixel window of the nearest-pixel projection.
    """
    nside = int(attrs["nside"])
    transfer = beam_window(lmax, float(attrs["fwhm_arcmin"])) * pixel_window(nside, lmax)
    return transfer * pixel_window(nside, lmax) if attrs.get("pixwin", False) else transfer


def measure_spectra(root: str | os.PathLike, split: str = "train", edges: np.ndarray | None = None,
                    window: str = "hann", max_patches: int | None = None, deconvolve: bool = False,
                    chunk: int = 512) -> dict:
    """Mean and scatter of the flat-sky band powers of a CMB dataset's patches, and theory.

    Ranks (if any) share the patches; every rank returns the same result. Band powers are
    C_ℓ in μK² (deconvolved from beam and pixel windows with ``deconvolve``).
    """
    data = ShardSet(root, split, kind=KIND)
    attrs = data.attrs
    shape = data.sample_shape("patches")
    reso = float(attrs["reso_arcmin"])
    top = min(spectra.nyquist_ell(reso), float(attrs["lmax"]))
    binning = spectra.make_binning(shape, reso, spectra.default_edges(shape, reso, top) if edges is None else edges,
                                   window)
    transfer = dataset_transfer(attrs, int(np.ceil(binning.edges[-1])) + 1) if deconvolve else None
    n = data.n if max_patches is None else min(int(max_patches), data.n)
    if n < 2:
        raise UserError(f"{root} split {split} has {n} patch(es); need at least 2 to measure a scatter")
    lo, hi = dist.share(n)
    sums = np.zeros(2 * binning.nbins)
    for a in range(lo, hi, chunk):
        bp = spectra.band_powers(data.read(a, min(a + chunk, hi), ("patches",))["patches"], binning, transfer)
        sums += np.concatenate([bp.sum(axis=0), (bp**2).sum(axis=0)])
    data.close()
    sums = dist.allreduce_sum_array(sums)
    mean = sums[:binning.nbins] / n
    std = np.sqrt(np.maximum(sums[binning.nbins:] / n - mean**2, 0.0) * n / (n - 1))
    ell_valid = valid_lmax(int(attrs["nside"]), int(attrs["lmax"]), reso)
    return {"dataset": str(root), "split": split, "n_patches": n, "units": "uK^2 (C_ell, not D_ell)",
            "ell": binning.ell.tolist(), "edges": binning.edges.tolist(), "mean": mean.tolist(),
            "std": std.tolist(), "theory": dataset_theory(root, attrs, binning, transfer).tolist(),
            "valid": (binning.edges[1:] <= ell_valid).tolist(), "ell_valid_max": ell_valid,
            "window": window, "deconvolved": bool(deconvolve), "reso_arcmin": reso, "shape": list(shape),
            "theory_model": "C_ell B_ell^2 [P_ell^2 if pixwin] x P_ell^2 (nearest-pixel projection) + white "
                            "pixelisation/noise floor, through the apodised flat-sky estimator"}
