"""Simulated skies and the patches cut from them: a_ℓm, gnomonic geometry, the patches' spectrum.

* ``sky_alm``: the harmonic coefficients of sky ``i`` (Gaussian, isotropic, spectrum
  ``C_ℓ B_ℓ² [P_ℓ²]``: beam and optional HEALPix pixel window), seeded by ``(seed, i)`` only;
* ``patch_centers``/``patch_vectors``/``patch_locations``: square patches, the gnomonic
  projection (north up, east left, as ``healpy.gnomview``) onto an H×W grid of
  ``reso_arcmin`` pixels around fixed centres: the pixel centres of a coarse HEALPix grid,
  optionally only where the whole patch lies at |b| ≥ ``b_min_deg``;
* ``simulate_patches``: the band-limited sky evaluated exactly at every patch pixel centre
  from its a_ℓm (``ducc0.sht.synthesis_general``), plus optional white noise. No HEALPix
  map is made, so nothing aliases a map's pixel grid: the patches are point samples of
  the sky, whose spectrum is ``map_spectrum`` (plus the noise) at every ℓ.

Conventions: temperatures in μK_CMB, C_ℓ in μK², angles in degrees (centres) or arcmin
(resolution, beam), Galactic coordinates, a_ℓm in healpy's ordering.
"""
from __future__ import annotations

import functools

import numpy as np

SYNTHESIS_EPSILON = 1e-7  # ducc0's relative accuracy of the synthesis: far below float32 rounding

# ---------------------------------------------------------------- geometry

def pixel_arcmin(nside: int) -> float:
    """Side of a HEALPix pixel of ``nside`` in arcmin: sqrt(4π / 12 nside²)."""
    return float(np.degrees(np.sqrt(4.0 * np.pi / (12.0 * nside**2))) * 60.0)


def patch_half_diagonal_deg(shape: tuple[int, int], reso_arcmin: float) -> float:
    """Angle (degrees) from a gnomonic patch's centre to its corners."""
    half = np.hypot(shape[0], shape[1]) / 2.0 * np.radians(reso_arcmin / 60.0)
    return float(np.degrees(np.arctan(half)))


def patch_centers(centers_nside: int, b_min_deg: float = 0.0, margin_deg: float = 0.0) -> np.ndarray:
    """Centres (float64 [Nc, 2]: lon, lat in degrees) of the RING pixels of a coarse HEALPix grid.

    With ``b_min_deg`` > 0 only centres with |lat| ≥ b_min_deg + margin_deg are kept, so a
    patch reaching ``margin_deg`` from its centre lies entirely outside the cut.
    """
    import healpy as hp

    lon, lat = hp.pix2ang(centers_nside, np.arange(12 * centers_nside**2), lonlat=True)
    keep = np.abs(lat) >= b_min_deg + margin_deg if b_min_deg > 0 else np.ones(len(lat), bool)
    return np.stack([lon[keep], lat[keep]], axis=1)


def min_separation_deg(centers: np.ndarray) -> float:
    """Smallest angle (degrees) between any two of ``centers`` (float [Nc, 2] lon, lat deg)."""
    from scipy.spatial import cKDTree

    if len(centers) < 2:
        return 180.0
    v = unit_vectors(centers[:, 0], centers[:, 1])
    chord = cKDTree(v).query(v, k=2)[0][:, 1].min()
    return float(np.degrees(2.0 * np.arcsin(min(chord / 2.0, 1.0))))


def unit_vectors(lon_deg: np.ndarray, lat_deg: np.ndarray) -> np.ndarray:
    """Unit vectors float64 [..., 3] of directions given in degrees (lon, lat)."""
    lon, lat = np.radians(lon_deg), np.radians(lat_deg)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def patch_vectors(centers: np.ndarray, shape: tuple[int, int], reso_arcmin: float) -> np.ndarray:
    """Unit vectors (float64 [3, Nc, H, W]) of the pixel centres of gnomonic patches.

    Row 0 is the northern edge, column 0 the eastern edge (longitude grows to the left, as
    on the sky and in ``healpy.gnomview``); pixel centres sit at ``(i − (H−1)/2)·reso`` on
    the tangent plane.
    """
    h, w = shape
    step = np.radians(reso_arcmin / 60.0)
    x = -(np.arange(w) - (w - 1) / 2.0) * step  # east coordinate
    y = ((h - 1) / 2.0 - np.arange(h)) * step  # north coordinate
    lon, lat = np.radians(centers[:, 0]), np.radians(centers[:, 1])
    center = unit_vectors(centers[:, 0], centers[:, 1]).T[:, :, None, None]
    east = np.stack([-np.sin(lon), np.cos(lon), np.zeros_like(lon)])[:, :, None, None]
    north = np.stack([-np.sin(lat) * np.cos(lon), -np.sin(lat) * np.sin(lon), np.cos(lat)])[:, :, None, None]
    v = center + x[None, None, None, :] * east + y[None, None, :, None] * north
    return v / np.linalg.norm(v, axis=0, keepdims=True)


def patch_locations(centers: np.ndarray, shape: tuple[int, int], reso_arcmin: float) -> np.ndarray:
    """(colatitude θ, longitude φ) in radians of every patch pixel: float64 [Nc·H·W, 2], patch-major."""
    v = patch_vectors(centers, shape, reso_arcmin).reshape(3, -1)
    theta = np.arccos(np.clip(v[2], -1.0, 1.0))
    phi = np.mod(np.arctan2(v[1], v[0]), 2.0 * np.pi)
    return np.ascontiguousarray(np.stack([theta, phi], axis=1))


# ---------------------------------------------------------------- skies

def map_seed(seed: int, index: int, stream: int = 0) -> np.random.SeedSequence:
    """The seed of sky ``index`` (``stream`` 0: the sky, 1: the noise): (seed, index) only."""
    return np.random.SeedSequence([int(seed), int(index), int(stream)])


@functools.lru_cache(maxsize=2)
def _alm_ell(lmax: int) -> np.ndarray:
    import healpy as hp

    return hp.Alm.getlm(lmax)[0]


def sky_alm(map_cl: np.ndarray, seed: int, index: int) -> np.ndarray:
    """a_ℓm (complex128 [(ℓmax+1)(ℓmax+2)/2], healpy order) of sky ``index`` with spectrum ``map_cl``.

    ``map_cl`` is float μK² [ℓmax+1] (``map_spectrum``): a_ℓ0 is real with variance C_ℓ,
    a_ℓm (m > 0) complex with variance C_ℓ/2 in each part. Drawn from a generator seeded
    by ``(seed, index)`` alone, so any rank makes the same sky.
    """
    ell = _alm_ell(len(map_cl) - 1)
    rng = np.random.default_rng(map_seed(seed, index, 0))
    amplitude = np.sqrt(np.asarray(map_cl, dtype=np.float64))[ell]
    real, imag = rng.standard_normal(len(ell)), rng.standard_normal(len(ell))
    alm = amplitude * (real + 1j * imag) / np.sqrt(2.0)
    m0 = slice(0, len(map_cl))  # healpy order: the m = 0 coefficients come first
    alm[m0] = amplitude[m0] * real[m0]
    return alm


def simulate_patches(map_cl: np.ndarray, locations: np.ndarray, shape: tuple[int, int], reso_arcmin: float,
                     noise_uk_arcmin: float, seed: int, index: int) -> np.ndarray:
    """The patches (float32 [Nc, H, W], μK) of sky ``index``: its a_ℓm evaluated at ``locations``.

    ``locations`` are ``patch_locations`` (float64 [Nc·H·W, 2]). The synthesis is exact to
    ``SYNTHESIS_EPSILON`` (a band-limited sky at arbitrary positions; one thread, so the
    numbers are the same on any rank). White noise of ``noise_uk_arcmin`` μK·arcmin adds
    σ = noise / reso_arcmin per patch pixel, seeded by ``(seed, index)``.
    """
    import ducc0

    lmax = len(map_cl) - 1
    values = ducc0.sht.synthesis_general(alm=sky_alm(map_cl, seed, index)[None], spin=0, lmax=lmax, loc=locations,
                                         epsilon=SYNTHESIS_EPSILON, nthreads=1)[0]
    if noise_uk_arcmin > 0:
        rng = np.random.default_rng(map_seed(seed, index, 1))
        values += rng.standard_normal(values.shape) * (noise_uk_arcmin / reso_arcmin)
    return values.reshape(-1, *shape).astype(np.float32)


# ---------------------------------------------------------------- what the patches' spectrum is

def map_spectrum(cl: np.ndarray, nside: int, lmax: int, fwhm_arcmin: float, pixwin: bool) -> np.ndarray:
    """Signal spectrum of the simulated skies: ``C_ℓ B_ℓ² [P_ℓ²]`` (μK², float64 [lmax+1]); 0 for ℓ < 2.

    The monopole and dipole are not simulated. ``P_ℓ`` is the HEALPix pixel window of
    ``nside`` (``pixwin``: the smoothing of a map observed at that resolution).
    """
    from cosmotrain.science.spectra import beam_window, pixel_window

    out = np.asarray(cl[:lmax + 1], dtype=np.float64) * beam_window(lmax, fwhm_arcmin) ** 2
    out[:2] = 0.0
    return out * pixel_window(nside, lmax) ** 2 if pixwin else out


def noise_variance(noise_uk_arcmin: float, reso_arcmin: float) -> float:
    """Variance (μK²) per patch pixel of white noise of ``noise_uk_arcmin`` μK·arcmin."""
    return float((noise_uk_arcmin / reso_arcmin) ** 2)
