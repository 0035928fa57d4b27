"""Independent reference implementations the tests compare the package against.

Gaussian random fields of a given spectrum (``gaussian_patches``), the naive binned theory
(``binned_cl``), the Gaussian scatter of band powers (``gaussian_band_std``) and the
analytic Minkowski functionals of a Gaussian field (``gaussian_minkowski``): truths the
estimators in ``cosmotrain.science`` must reproduce, kept out of the package because only
the tests use them.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import erfc

from cosmotrain.science.spectra import ARCMIN, Binning, correlation_function, mode_ells
from cosmotrain.science.stats import _derivatives


def binned_cl(cl: np.ndarray, binning: Binning) -> np.ndarray:
    """``cl`` (μK², [ℓmax+1]) averaged over the Fourier modes of each bin: float64 ``[nbins]``.

    The naive theory (no window coupling, no aliasing), evaluated at ℓ = |k| − ½, the
    flat-sky counterpart of the sphere's ℓ.
    """
    cl = np.asarray(cl, dtype=np.float64)
    ells = binning.mode_ell
    values = np.interp(ells - 0.5, np.arange(len(cl)), cl, right=0.0)
    return values.ravel() @ binning.matrix


def gaussian_band_std(mode_power: np.ndarray, binning: Binning) -> np.ndarray:
    """Standard deviation of one patch's band powers for a Gaussian field: float64 ``[nbins]``.

    ``mode_power`` [H, W//2+1] is the expected power per mode (``expected_mode_powers``).
    Uses ``Cov(Ĉ_k, Ĉ_k') ≈ P_k P_k' (|V(k-k')|² + |V(k+k')|²) / V(0)²`` with ``V`` the
    Fourier transform of the squared window: the correlation that apodisation induces
    between neighbouring modes reduces the number of independent modes in a bin.
    """
    h, w = binning.shape
    v2 = np.abs(np.fft.fft2(binning.window**2)) ** 2
    v2 /= v2[0, 0]
    full_power = _full_grid(mode_power, binning.shape)
    full_ell = _full_grid(binning.mode_ell, binning.shape)
    ky, kx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    std = np.empty(binning.nbins)
    for b in range(binning.nbins):
        sel = (full_ell >= binning.edges[b]) & (full_ell < binning.edges[b + 1])
        p, y, x = full_power[sel], ky[sel], kx[sel]
        coupling = v2[(y[:, None] - y[None]) % h, (x[:, None] - x[None]) % w] + \
            v2[(y[:, None] + y[None]) % h, (x[:, None] + x[None]) % w]
        std[b] = np.sqrt(p @ coupling @ p) / len(p)
    return std


def _full_grid(half: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Expand an ``rfft2``-layout array ``[H, W//2+1]`` of a real, even quantity to ``[H, W]``."""
    h, w = shape
    ky = (-np.arange(h)) % h
    kx = np.arange(w)
    cols = np.where(kx <= w // 2, kx, w - kx)
    rows = np.where(kx[None, :] <= w // 2, np.arange(h)[:, None], ky[:, None])
    return half[rows, cols[None, :]]


def gaussian_patches(cl: np.ndarray, n: int, shape: tuple[int, int], reso_arcmin: float,
                     rng: np.random.Generator, pad: int = 3) -> np.ndarray:
    """``n`` Gaussian flat-sky patches of spectrum ``cl`` (μK², [ℓmax+1]): float64 ``[n, H, W]`` μK.

    Each patch is the corner of an independent periodic field ``pad`` times larger, so it
    does not see the periodicity. Mode ``k`` gets ``C(|k| − ½)``; power above ``ℓmax`` or
    the grid's Nyquist ℓ is absent (no aliasing).
    """
    h, w = shape
    big = (pad * h, pad * w)
    cl = np.asarray(cl, dtype=np.float64)
    ells = mode_ells(big, reso_arcmin)
    amplitude = np.sqrt(np.interp(ells - 0.5, np.arange(len(cl)), cl, left=cl[0], right=0.0)) / (reso_arcmin * ARCMIN)
    out = np.empty((n, h, w))
    for i in range(0, n, 64):
        m = min(64, n - i)
        white = rng.standard_normal((m,) + big)
        field = np.fft.irfft2(np.fft.rfft2(white) * amplitude, s=big)
        out[i:i + m] = field[:, :h, :w]
    return out


def gradient_ratio(fields: np.ndarray, sigma: float | None = None) -> float:
    """``σ1/σ0`` of a batch: rms of |∇x| (per pixel) over σ0, for ``gaussian_minkowski``.

    σ0 is ``sigma`` if given, else the rms of each field about its own mean, matching the
    normalisation used by ``minkowski_functionals``. Same central differences.
    """
    x = np.asarray(fields, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    _, grad, _ = _derivatives(x)
    sigma0 = np.sqrt(np.mean(x.var(axis=(1, 2)))) if sigma is None else float(sigma)
    return float(np.sqrt(np.mean(grad**2)) / sigma0)


def gaussian_minkowski(thresholds: np.ndarray, gradient_to_sigma: float) -> np.ndarray:
    """Expected V0, V1, V2 (float64 ``[3, T]``) of an isotropic Gaussian field.

    ``gradient_to_sigma`` is σ1/σ0 with σ1² = <|∇u|²> (per pixel) and σ0² = <u²>:

    * V0 = ½ erfc(ν/√2)
    * V1 = (σ1/σ0) e^{−ν²/2} / (8√2)
    * V2 = (σ1/σ0)² ν e^{−ν²/2} / (2 (2π)^{3/2})
    """
    nu = np.asarray(thresholds, dtype=np.float64)
    r = float(gradient_to_sigma)
    gauss = np.exp(-0.5 * nu**2)
    return np.stack([0.5 * erfc(nu / math.sqrt(2.0)),
                     r * gauss / (8.0 * math.sqrt(2.0)),
                     r**2 * nu * gauss / (2.0 * (2.0 * math.pi) ** 1.5)])


def gaussian_band_covariance(cl: np.ndarray, binning: Binning, white_var: float = 0.0) -> np.ndarray:
    """Exact covariance (float64 ``[nbins, nbins]``, μK⁴) of one patch's ``band_powers`` for a Gaussian field.

    The field (spectrum ``cl`` μK² [ℓmax+1], plus white noise ``white_var`` μK² per pixel) is
    sampled at the patch's pixel centres, so the apodised Fourier coefficients ``y_k`` have
    covariance ``A = F diag(w) Ξ diag(w) F^H`` and pseudo-covariance ``B = F diag(w) Ξ diag(w) F^T``
    with ``Ξ`` the pixels' covariance; Isserlis gives ``Cov(|y_k|², |y_k'|²) = |A_kk'|² + |B_kk'|²``.
    Every mode of the full FFT grid is kept, so bins average over both halves of the plane.
    """
    h, w = binning.shape
    iy, ix = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    lag = np.hypot(iy.ravel()[:, None] - iy.ravel()[None, :], ix.ravel()[:, None] - ix.ravel()[None, :])
    unique, inverse = np.unique(lag, return_inverse=True)
    xi = correlation_function(cl, unique * binning.reso_arcmin * ARCMIN)[inverse].reshape(lag.shape)
    xi[np.diag_indices_from(xi)] += white_var
    weighted = binning.window.ravel()[:, None] * xi * binning.window.ravel()[None, :]
    m = weighted.reshape(h, w, h, w)
    a = np.fft.ifft2(np.fft.fft2(m, axes=(0, 1)), axes=(2, 3)).reshape(h * w, h * w) * (h * w)
    b = np.fft.fft2(np.fft.fft2(m, axes=(0, 1)), axes=(2, 3)).reshape(h * w, h * w)
    cov_modes = (np.abs(a) ** 2 + np.abs(b) ** 2) * binning.norm**2
    full_ell = np.hypot(*np.meshgrid(np.fft.fftfreq(h, binning.reso_arcmin * ARCMIN),
                                     np.fft.fftfreq(w, binning.reso_arcmin * ARCMIN), indexing="ij")).ravel() * 2 * np.pi
    member = np.stack([(full_ell >= lo) & (full_ell < hi) for lo, hi in zip(binning.edges[:-1], binning.edges[1:])])
    weights = member / member.sum(axis=1, keepdims=True)
    return weights @ cov_modes @ weights.T
