"""What a CMB dataset's patches should measure: the expected flat-sky band powers from its input C_ℓ.

The input spectrum (``DIR/cl_input.txt``) goes through the maps' beam and pixel window
(``sky.map_spectrum``), the nearest-pixel projection onto the patches (``sky.patch_model``)
and the apodised flat-sky estimator (``science.spectra.theory_band_powers``). Used by
``cosmotrain spectra`` and by the GAN's spectra plot.
"""
from __future__ import annotations

import os

import numpy as np

from cosmotrain.data.cmb_spectrum import read_dataset_spectrum
from cosmotrain.data.sky import map_spectrum, patch_model
from cosmotrain.science.spectra import Binning, theory_band_powers


def dataset_theory(root: str | os.PathLike, attrs: dict, binning: Binning,
                   transfer: np.ndarray | None = None) -> np.ndarray:
    """Expected band powers (C_ℓ in μK², float64 [nbins]) of the patches of dataset ``root`` with ``attrs``.

    ``transfer`` (amplitude per ℓ) is divided out as the estimator does with ``--deconvolve``.
    """
    cl = read_dataset_spectrum(root)
    nside, lmax = int(attrs["nside"]), int(attrs["lmax"])
    map_cl = map_spectrum(cl, nside, lmax, float(attrs["fwhm_arcmin"]), bool(attrs.get("pixwin", False)))
    coherent, white = patch_model(map_cl, nside, float(attrs.get("noise_uk_arcmin", 0.0)))
    return theory_band_powers(coherent, binning, transfer, white_var=white)
