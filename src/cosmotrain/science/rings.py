"""Fourier rings of a square patch: the modes with k <= |k| < k + 1 fundamentals, and their powers.

A ring is the unit the GAN's spectrum term (``train.spectrum_loss``) and its calibration
filter (``science.calibration``) work in: the monitors' ℓ bins, two fundamentals wide with
edges at even multiples of the fundamental, are each the union of two rings. Powers are
those of the Hann-apodised patch (the monitors' window), in whatever units the patches
are. Pure NumPy.
"""
from __future__ import annotations

import math

import numpy as np

from cosmotrain.science import spectra
from cosmotrain.science.referee_features import laplacian

SIGNIFICANT = 1e-6  # rings whose real power is below this fraction of the strongest ring are left out


def top_wavenumber(size: int, reso_arcmin: float, lmax: float | None) -> int:
    """K in fundamentals: Nyquist (``size // 2``) or ``lmax``, whichever is lower (>= 2)."""
    top = size // 2
    if lmax:
        top = min(top, int(math.floor(lmax / spectra.fundamental_ell((size, size), reso_arcmin))))
    return max(top, 2)


def mode_rings(size: int, tile: int = 1) -> np.ndarray:
    """int [tile·size, tile·size]: the ring of each ``fft2`` mode, k <= |k| < k + 1 fundamentals of a size×size patch.

    ``tile`` > 1: the modes of a tile of ``tile`` × ``tile`` patches (e.g. a patch beside its
    mirror images, 2), 1/tile of a patch fundamental apart.
    """
    k = np.fft.fftfreq(tile * size) * size
    return np.floor(np.hypot(k[:, None], k[None, :]) + 1e-9).astype(int)


def ring_matrix(size: int, top: int) -> np.ndarray:
    """float64 [size·size, top + 1]: averages the ``fft2`` modes of a size×size patch into rings 0..top.

    Ring k holds the modes with k <= |k| < k + 1 fundamentals, so the monitors' ℓ bins (edges
    at even multiples of the fundamental) are each the union of two rings.
    """
    ring = mode_rings(size).ravel()
    matrix = np.zeros((size * size, top + 1))
    inside = ring <= top
    matrix[np.flatnonzero(inside), ring[inside]] = 1.0
    return matrix / matrix.sum(axis=0)


def window(size: int) -> np.ndarray:
    """The monitors' Hann apodisation window, float64 [size, size]."""
    return spectra.apodization_window((size, size), "hann")


def patch_ring_powers(patches: np.ndarray, matrix: np.ndarray, prewhiten: bool = False) -> np.ndarray:
    """float64 [N, rings]: the ring powers of each apodised patch of float [N, size, size] (NumPy).

    ``prewhiten``: those of the patches' ``prewhitened`` interiors instead.
    """
    x = np.asarray(patches, dtype=np.float64)
    x = prewhitened(x, np) if prewhiten else x * window(x.shape[-1])
    power = np.abs(np.fft.fft2(x)) ** 2
    return power.reshape(len(x), -1) @ matrix


def prewhitened(patches, ops):
    """Minus the 5-point Laplacian of each patch's interior, zero-padded back to [N, size, size], not apodised.

    ``ops`` is ``numpy`` or ``tensorflow`` (the spectrum term's reading). The Laplacian
    multiplies a mode's power by about |k|⁴, which flattens the beam-damped CMB spectrum
    enough that the interior's edges leak nothing that matters, so no window is needed and
    every pixel counts alike. The Hann window weighs a patch's outer pixels next to
    nothing: read through it alone, a generator matched every ring within 1–2 % while the
    unwindowed Laplacian showed 3–10 % too much power at ℓ ≳ 1000 (docs/gan.md).
    """
    return ops.pad(laplacian(patches), [[0, 0], [1, 1], [1, 1]])


def ring_weights(powers: np.ndarray) -> np.ndarray:
    """float64 [rings]: how tightly real patches pin each ring's mean down, P̄² / per-patch variance.

    ``powers`` float [N, rings] are the real patches' ``patch_ring_powers``.

    The C_ℓ monitor divides each bin's error by the scatter of real band powers, so a ring
    whose power scatters little between patches (many modes, e.g. the dozens of modes
    around ℓ ≈ 1000) has to be matched more closely than one that scatters a lot (ring 0, a
    single mode). Capped at 1000 (3 % scatter) so a ring of constant power cannot take over.
    """
    mean, variance = powers.mean(axis=0), powers.var(axis=0)
    return mean**2 / np.maximum(variance, 1e-3 * mean**2 + np.finfo(np.float64).tiny)
