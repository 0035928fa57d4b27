"""Angular power spectra of CMB temperature fields: flat-sky patches and the full sky.

Conventions (the same everywhere in cosmotrain):

* temperatures in μK_CMB; ``C_ℓ`` in μK² (healpy's and CAMB's "raw" C_ℓ: the variance per
  unit ℓ-mode, radians on the sky); ``D_ℓ = ℓ(ℓ+1) C_ℓ / 2π`` in μK² is only for plotting;
* a patch is a float array ``[H, W]`` of point samples of the sky at the centres of a
  square grid of side ``reso_arcmin``; a batch is ``[N, H, W]``;
* the flat-sky multipole of the 2-D Fourier mode with integer frequencies ``(m, n)`` is
  ``ℓ = 2π sqrt((m / H Δ)² + (n / W Δ)²)`` with ``Δ`` the pixel side in radians;
* transfer functions (``beam_window``, ``pixel_window``) are amplitude factors ``T_ℓ``: a
  field smoothed by them has spectrum ``C_ℓ T_ℓ²``.

The flat-sky estimator (``band_powers``) apodises each patch, takes its 2-D FFT, divides
``|FFT|²`` by the window's mean square and averages it over annuli in ℓ. Its exact
expectation for any isotropic field with spectrum ``C_ℓ`` (``theory_band_powers``) follows
from the field's correlation function and the window's autocorrelation, so the window's
mode coupling and the aliasing of power above the patch's Nyquist ℓ are included.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

ARCMIN = np.pi / (180.0 * 60.0)  # one arcminute in radians
WINDOWS = ("hann", "tukey", "none")


# ---------------------------------------------------------------- conventions

def dl_from_cl(ell: np.ndarray, cl: np.ndarray) -> np.ndarray:
    """``D_ℓ = ℓ(ℓ+1) C_ℓ / 2π`` (μK² in, μK² out); ``ell`` broadcasts against ``cl``."""
    ell = np.asarray(ell, dtype=np.float64)
    return ell * (ell + 1.0) * np.asarray(cl, dtype=np.float64) / (2.0 * np.pi)


def cl_from_dl(ell: np.ndarray, dl: np.ndarray) -> np.ndarray:
    """``C_ℓ = 2π D_ℓ / ℓ(ℓ+1)``; 0 where ℓ = 0 (the monopole has no D_ℓ)."""
    ell = np.asarray(ell, dtype=np.float64)
    factor = np.divide(2.0 * np.pi, ell * (ell + 1.0), out=np.zeros_like(ell), where=ell > 0)
    return factor * np.asarray(dl, dtype=np.float64)


# ---------------------------------------------------------------- transfer functions

def beam_window(lmax: int, fwhm_arcmin: float) -> np.ndarray:
    """Gaussian beam ``B_ℓ = exp(-ℓ(ℓ+1)σ²/2)``, σ = FWHM/√(8 ln 2); float64 ``[lmax+1]``.

    The same beam healpy's ``synfast(fwhm=...)`` and ``gauss_beam`` apply.
    """
    sigma = fwhm_arcmin * ARCMIN / np.sqrt(8.0 * np.log(2.0))
    ell = np.arange(lmax + 1, dtype=np.float64)
    return np.exp(-0.5 * ell * (ell + 1.0) * sigma**2)


@functools.lru_cache(maxsize=16)
def _pixel_window_cached(nside: int, lmax: int) -> np.ndarray:
    import healpy as hp

    sub, n_pixels, n_angles = 16, 48, 16
    ring = np.linspace(0, 12 * nside**2 - 1, n_pixels).round().astype(np.int64)
    children = hp.ring2nest(nside, ring)[:, None] * sub**2 + np.arange(sub**2)
    v = np.array(hp.pix2vec(nside * sub, children, nest=True))  # [3, P, S]
    centers = np.array(hp.pix2vec(nside, ring))  # [3, P]
    xy = np.stack([_tangent_coordinates(centers[:, p], v[:, p]) for p in range(n_pixels)])  # [P, 2, S]
    phi = np.pi * np.arange(n_angles) / n_angles
    projection = np.einsum("ad,pds->pas", np.stack([np.cos(phi), np.sin(phi)], axis=1), xy)  # [P, A, S]
    ell = np.linspace(0.0, lmax, min(lmax + 1, 129))
    step = np.exp(1j * (ell[1] - ell[0]) * projection) if len(ell) > 1 else None
    phase = np.ones_like(projection, dtype=np.complex128)
    power = np.empty(len(ell))
    for i in range(len(ell)):  # exp(iℓ·x) by repeated multiplication: ℓ grows by a fixed step
        power[i] = np.mean(np.abs(phase.mean(axis=2)) ** 2)
        if step is not None:
            phase *= step
    return np.interp(np.arange(lmax + 1), ell, np.sqrt(power))


def pixel_window(nside: int, lmax: int) -> np.ndarray:
    """HEALPix pixel window ``P_ℓ`` for ``nside``: float64 ``[lmax+1]``, P_0 = 1.

    The amplitude transfer function of averaging the sky over one HEALPix pixel,
    ``P_ℓ² = <|(1/Ω) ∫_pixel exp(i k·x) d²x|²>`` over 48 pixels spread over the sphere and
    over directions of ``k`` (|k| = ℓ), each pixel sampled by its 256 children at 16·nside.
    Computed here (≈0.5 s, cached) because ``healpy.pixwin`` downloads its tables from the
    internet, which compute nodes usually cannot reach; it agrees with those tables to a
    few 0.1 % up to ℓ = 3·nside.
    """
    if lmax < 0:
        raise ValueError(f"lmax must be >= 0, got {lmax}")
    return _pixel_window_cached(int(nside), int(lmax)).copy()


def _tangent_coordinates(center: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Gnomonic coordinates (east, north) in radians of unit ``vectors`` [3, S] around ``center`` [3]."""
    z = np.array([0.0, 0.0, 1.0])
    east = np.cross(z, center)
    norm = np.linalg.norm(east)
    east = east / norm if norm > 1e-12 else np.array([0.0, 1.0, 0.0])
    north = np.cross(center, east)
    depth = center @ vectors
    return np.stack([east @ vectors, north @ vectors]) / depth


# ---------------------------------------------------------------- flat-sky estimator

def apodization_window(shape: tuple[int, int], kind: str = "hann", alpha: float = 0.5) -> np.ndarray:
    """Separable apodisation window, float64 ``[H, W]``, maximum 1.

    ``hann``: ``sin²(π (i + ½) / n)`` per axis; its Fourier transform is non-zero only at
    frequencies 0 and ±1, so removing the patch mean leaves every mode with |k| ≥ 2
    fundamentals untouched. ``tukey``: flat centre, cosine edges over a fraction ``alpha``
    of the side. ``none``: no apodisation (strong leakage from large scales).
    """
    if kind not in WINDOWS:
        raise ValueError(f"unknown window '{kind}'; use one of {', '.join(WINDOWS)}")
    return np.outer(_taper(shape[0], kind, alpha), _taper(shape[1], kind, alpha))


def _taper(n: int, kind: str, alpha: float) -> np.ndarray:
    x = (np.arange(n) + 0.5) / n
    if kind == "hann":
        return np.sin(np.pi * x) ** 2
    if kind == "tukey" and alpha > 0:
        edge = np.clip(np.minimum(x, 1.0 - x) / (alpha / 2.0), 0.0, 1.0)
        return np.sin(0.5 * np.pi * edge) ** 2
    return np.ones(n)


def mode_ells(shape: tuple[int, int], reso_arcmin: float) -> np.ndarray:
    """Flat-sky ℓ of each ``rfft2`` mode of an ``[H, W]`` patch: float64 ``[H, W//2 + 1]``."""
    step = reso_arcmin * ARCMIN
    ky = 2.0 * np.pi * np.fft.fftfreq(shape[0], step)
    kx = 2.0 * np.pi * np.fft.rfftfreq(shape[1], step)
    return np.hypot(ky[:, None], kx[None, :])


def fundamental_ell(shape: tuple[int, int], reso_arcmin: float) -> float:
    """ℓ of the lowest Fourier mode along the patch's shorter side: 2π / (side in radians)."""
    return 2.0 * np.pi / (min(shape) * reso_arcmin * ARCMIN)


def nyquist_ell(reso_arcmin: float) -> float:
    """Highest ℓ a grid of pixel side ``reso_arcmin`` resolves along an axis: π / Δ."""
    return np.pi / (reso_arcmin * ARCMIN)


def default_edges(shape: tuple[int, int], reso_arcmin: float, lmax: float | None = None,
                  width: float = 2.0) -> np.ndarray:
    """Bin edges in ℓ: from 2 fundamentals up to min(Nyquist ℓ, ``lmax``), ``width`` fundamentals wide.

    Below 2 fundamentals the apodised patch has no independent modes; bins are a couple of
    fundamentals wide because the window couples neighbouring modes. float64 ``[nbins+1]``.
    """
    base = fundamental_ell(shape, reso_arcmin)
    top = nyquist_ell(reso_arcmin) if lmax is None else min(nyquist_ell(reso_arcmin), lmax)
    edges = base * np.arange(2.0, top / base + 1e-9, width)
    if len(edges) < 2:
        raise ValueError(f"no ℓ bin fits between 2 fundamentals ({2 * base:.0f}) and ℓ = {top:.0f}; "
                         f"use larger patches or a finer resolution")
    return edges


@dataclasses.dataclass(frozen=True, eq=False)
class Binning:
    """Everything the estimator needs about a patch geometry and its ℓ bins.

    ``ell`` [nbins] is the mean flat-sky ℓ of the Fourier modes in each bin, ``n_modes``
    [nbins] their number on the full FFT grid, ``matrix`` [H·(W//2+1), nbins] averages
    ``rfft2`` powers into bins, ``norm`` turns ``|FFT(w·x)|²`` (μK²) into C_ℓ (μK²).
    """

    shape: tuple[int, int]
    reso_arcmin: float
    edges: np.ndarray
    window: np.ndarray
    ell: np.ndarray
    n_modes: np.ndarray
    matrix: np.ndarray
    mode_ell: np.ndarray
    in_bins: np.ndarray
    norm: float

    @property
    def nbins(self) -> int:
        return len(self.ell)


def make_binning(shape: tuple[int, int], reso_arcmin: float, edges: np.ndarray | None = None,
                 window: str = "hann", alpha: float = 0.5) -> Binning:
    """Precompute the estimator for ``[H, W]`` patches of pixel side ``reso_arcmin`` (arcmin).

    ``edges`` [nbins+1] are increasing ℓ bin edges (default ``default_edges``); bin ``b``
    holds modes with ``edges[b] <= ℓ < edges[b+1]``.
    """
    shape = (int(shape[0]), int(shape[1]))
    edges = default_edges(shape, reso_arcmin) if edges is None else np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0) or edges[0] < 0:
        raise ValueError(f"ℓ bin edges must be an increasing list of at least 2 values >= 0, got {edges}")
    ells = mode_ells(shape, reso_arcmin)
    multiplicity = np.full(ells.shape[1], 2.0)
    multiplicity[0] = 1.0
    if shape[1] % 2 == 0:
        multiplicity[-1] = 1.0
    index = np.digitize(ells, edges) - 1
    in_bins = (index >= 0) & (index < len(edges) - 1)
    counts = np.zeros((ells.size, len(edges) - 1))
    flat = np.flatnonzero(in_bins)
    counts[flat, index.ravel()[flat]] = np.broadcast_to(multiplicity, ells.shape).ravel()[flat]
    n_modes = counts.sum(axis=0)
    if np.any(n_modes == 0):
        b = int(np.argmax(n_modes == 0))
        raise ValueError(f"ℓ bin [{edges[b]:.0f}, {edges[b + 1]:.0f}) holds no Fourier mode of a "
                         f"{shape[0]}x{shape[1]} patch at {reso_arcmin}'; widen the bins")
    w = apodization_window(shape, window, alpha)
    step = reso_arcmin * ARCMIN
    return Binning(shape, float(reso_arcmin), edges, w,
                   ell=(counts * ells.reshape(-1, 1)).sum(axis=0) / n_modes, n_modes=n_modes,
                   matrix=counts / n_modes, mode_ell=ells, in_bins=in_bins,
                   norm=step**2 / (shape[0] * shape[1] * np.mean(w**2)))


def mode_powers(patches: np.ndarray, binning: Binning) -> np.ndarray:
    """Apodised ``|FFT|²`` of each patch, normalised to C_ℓ (μK²): float64 ``[N, H, W//2+1]``.

    The window-weighted mean of each patch is removed first (the flat estimator cannot
    measure the monopole of a patch).
    """
    x = np.asarray(patches, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.shape[1:] != binning.shape:
        raise ValueError(f"patches have shape {x.shape[1:]}, the binning was made for {binning.shape}")
    w = binning.window
    mean = np.einsum("nij,ij->n", x, w) / w.sum()
    y = (x - mean[:, None, None]) * w
    return np.abs(np.fft.rfft2(y)) ** 2 * binning.norm


def line_power_ratio(generated: np.ndarray, real: np.ndarray, wavenumber: int) -> tuple[float, float]:
    """Generated ÷ real mean 2D power on the lines |k_x| or |k_y| = ``wavenumber``, and off them.

    ``generated`` and ``real`` are float ``[N, n, n]`` patches (any N each), Hann-apodised;
    ``wavenumber`` is in fundamentals (2 ≤ it < n/2). Returns (the ratio on those lines, the
    ratio on the other modes of the same rings, ``wavenumber`` ≤ |k| < ``wavenumber`` + 2).
    The lines are the Nyquist frequency of a 2·``wavenumber`` grid: a generator that doubles
    an n/2^j map in size has to make their phases up in its later layers, and a ring-averaged
    spectrum can be right while the lines are short and the rest of the ring too loud. The
    window mixes each mode with its neighbours: a line without power reads about a third of
    theirs (white noise).
    """
    n = real.shape[-1]
    if not 2 <= wavenumber < n // 2:
        raise ValueError(f"wavenumber must be in [2, {n // 2}), got {wavenumber}")
    k = np.abs(np.fft.fftfreq(n) * n)
    kx, ky = np.meshgrid(k, k, indexing="ij")
    modulus = np.hypot(kx, ky)
    ring = (modulus >= wavenumber) & (modulus < wavenumber + 2)
    on = ring & ((kx == wavenumber) | (ky == wavenumber))
    gen, ref = _mean_power_2d(generated), _mean_power_2d(real)
    return float(gen[on].sum() / ref[on].sum()), float(gen[ring & ~on].sum() / ref[ring & ~on].sum())


def _mean_power_2d(patches: np.ndarray) -> np.ndarray:
    """Mean |FFT|² over patches float [N, n, n] of the Hann-apodised patches, [n, n]."""
    x = np.asarray(patches, dtype=np.float64)
    return (np.abs(np.fft.fft2(x * apodization_window(x.shape[1:]))) ** 2).mean(axis=0)


def band_powers(patches: np.ndarray, binning: Binning) -> np.ndarray:
    """Flat-sky band powers of each patch: float64 ``[N, nbins]`` in μK² (C_ℓ, not D_ℓ).

    ``patches`` is float ``[N, H, W]`` (or one ``[H, W]``) in μK. Vectorised over the batch:
    about 10–20 ms per 64 patches of 64×64 pixels on one core.
    """
    power = mode_powers(patches, binning)
    return power.reshape(len(power), -1) @ binning.matrix


# ---------------------------------------------------------------- theory

def correlation_function(cl: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``ξ(θ) = Σ_ℓ (2ℓ+1)/4π C_ℓ P_ℓ(cos θ)`` in μK² for angles ``theta`` in radians.

    ``cl`` is float ``[ℓmax+1]`` in μK²; exact on the sphere (Legendre recurrence).
    """
    cl = np.asarray(cl, dtype=np.float64)
    x = np.cos(np.asarray(theta, dtype=np.float64))
    previous, current = np.ones_like(x), x.copy()
    xi = cl[0] / (4.0 * np.pi) * previous
    if len(cl) > 1:
        xi = xi + 3.0 * cl[1] / (4.0 * np.pi) * current
    for ell in range(1, len(cl) - 1):
        previous, current = current, ((2 * ell + 1) * x * current - ell * previous) / (ell + 1)
        xi += (2 * ell + 3) * cl[ell + 1] / (4.0 * np.pi) * current
    return xi


def expected_mode_powers(cl: np.ndarray, binning: Binning, white_var: float = 0.0) -> np.ndarray:
    """Expectation of ``mode_powers`` for an isotropic field of spectrum ``cl`` (μK², [ℓmax+1]).

    Point samples on the patch grid have covariance ``ξ(Δ·reso)`` at pixel lag Δ, so
    ``E|FFT(w x)(k)|² = Σ_Δ A_w(Δ) ξ(Δ) e^{-ik·Δ}`` with ``A_w`` the window's
    autocorrelation: exact, window mode coupling and aliasing included (the patch's
    curvature, < 0.1 % for patches of a few degrees, is neglected). ``white_var`` (μK²)
    adds independent per-pixel noise of that variance. float64 ``[H, W//2+1]``.
    """
    h, w = binning.shape
    dy = np.fft.fftfreq(2 * h, 1.0 / (2 * h))
    dx = np.fft.fftfreq(2 * w, 1.0 / (2 * w))
    lag2 = (dy[:, None] ** 2 + dx[None, :] ** 2).astype(np.int64)
    unique, inverse = np.unique(lag2, return_inverse=True)
    xi = correlation_function(cl, np.sqrt(unique) * binning.reso_arcmin * ARCMIN)[inverse].reshape(lag2.shape)
    xi[0, 0] += white_var
    window_ft = np.fft.rfft2(binning.window, s=(2 * h, 2 * w))
    autocorrelation = np.fft.irfft2(np.abs(window_ft) ** 2, s=(2 * h, 2 * w))
    spectrum = np.fft.rfft2(autocorrelation * xi).real
    return spectrum[::2, ::2] * binning.norm


def theory_band_powers(cl: np.ndarray, binning: Binning, white_var: float = 0.0) -> np.ndarray:
    """Expected ``band_powers`` of patches of a field with spectrum ``cl``: float64 ``[nbins]`` μK².

    ``cl`` [ℓmax+1] must already include what was applied to the patches (beam², pixel
    window²); ``white_var`` (μK²) is the variance of any independent per-pixel term (white
    noise as sampled on the patch grid).
    """
    return expected_mode_powers(cl, binning, white_var).ravel() @ binning.matrix
