"""What a CMB dataset's patches should measure: the expected flat-sky band powers from its input C_ℓ.

The input spectrum (``DIR/cl_input.txt``) goes through the skies' beam and pixel window
(``sky.map_spectrum``); white noise adds its variance; the apodised flat-sky estimator
(``science.spectra.theory_band_powers``) gives the expectation, window coupling and aliasing
included. The patches are the sky evaluated exactly at their pixel centres, so it holds in
every bin up to the Nyquist ℓ. Used by ``cosmotrain spectra`` and by the GAN's spectra plot.
"""
from __future__ import annotations

import os

import numpy as np

from cosmotrain.data.cmb_spectrum import read_dataset_spectrum
from cosmotrain.data.sky import map_spectrum, noise_variance
from cosmotrain.science.spectra import Binning, theory_band_powers


def dataset_map_spectrum(root: str | os.PathLike, attrs: dict) -> np.ndarray:
    """The spectrum (μK², float64 [lmax+1]) every sky of a dataset was drawn from: C_ℓ B_ℓ² [P_ℓ²]."""
    return map_spectrum(read_dataset_spectrum(root), int(attrs["nside"]), int(attrs["lmax"]),
                        float(attrs["fwhm_arcmin"]), bool(attrs.get("pixwin", False)))


def dataset_theory(root: str | os.PathLike, attrs: dict, binning: Binning) -> np.ndarray:
    """Expected band powers (C_ℓ in μK², float64 [nbins]) of the patches of dataset ``root`` with ``attrs``."""
    white = noise_variance(float(attrs.get("noise_uk_arcmin", 0.0)), float(attrs["reso_arcmin"]))
    return theory_band_powers(dataset_map_spectrum(root, attrs), binning, white_var=white)
