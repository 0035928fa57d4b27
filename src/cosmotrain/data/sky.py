"""Simulated skies and the patches cut from them: healpy maps, gnomonic geometry, the patches' spectrum.

* ``simulate_map``: a full-sky map with ``healpy.synfast`` (Gaussian beam; HEALPix pixel
  window; optional white noise), map ``i`` seeded by ``(seed, i)`` only;
* ``patch_centers``/``patch_pixels``/``cut_patches``: square patches, the gnomonic
  projection (north up, east left, as ``healpy.gnomview``) of a map onto an H×W grid of
  ``reso_arcmin`` pixels around fixed centres: the pixel centres of a coarse HEALPix grid,
  optionally only where the whole patch lies at |b| ≥ ``b_min_deg``. A patch pixel takes the
  value of the map pixel it falls in (nearest neighbour);
* ``map_spectrum``/``patch_model``: what the patches' spectrum should be. Nearest-neighbour
  sampling of a pixelised map displaces each sample by up to half a map pixel, which
  multiplies the map's spectrum by the pixel window once more (the coherent part) and adds
  a white floor holding the rest of the variance. The model is accurate to ≈1 % for
  ℓ ≤ 0.8·nside, 2 % at nside; beyond, pixelisation artefacts the model does not follow
  take over (``valid_lmax``).

Conventions: temperatures in μK_CMB, C_ℓ in μK², angles in degrees (centres) or arcmin
(resolution, beam), maps in Galactic coordinates, RING ordering.
"""
from __future__ import annotations

import contextlib

import numpy as np

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
    v = _unit_vectors(centers[:, 0], centers[:, 1])
    chord = cKDTree(v).query(v, k=2)[0][:, 1].min()
    return float(np.degrees(2.0 * np.arcsin(min(chord / 2.0, 1.0))))


def _unit_vectors(lon_deg: np.ndarray, lat_deg: np.ndarray) -> np.ndarray:
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
    center = _unit_vectors(centers[:, 0], centers[:, 1]).T[:, :, None, None]
    east = np.stack([-np.sin(lon), np.cos(lon), np.zeros_like(lon)])[:, :, None, None]
    north = np.stack([-np.sin(lat) * np.cos(lon), -np.sin(lat) * np.sin(lon), np.cos(lat)])[:, :, None, None]
    v = center + x[None, None, None, :] * east + y[None, None, :, None] * north
    return v / np.linalg.norm(v, axis=0, keepdims=True)


def patch_pixels(nside: int, centers: np.ndarray, shape: tuple[int, int], reso_arcmin: float) -> np.ndarray:
    """RING indices (int64 [Nc, H, W]) of the map pixel under each patch pixel."""
    import healpy as hp

    v = patch_vectors(centers, shape, reso_arcmin)
    return hp.vec2pix(nside, v[0], v[1], v[2]).astype(np.int64)


def cut_patches(sky_map: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Patches (float32 [Nc, H, W], μK) of a map (float [12·nside²], μK) at ``patch_pixels``."""
    return np.asarray(sky_map)[pixels].astype(np.float32)


# ---------------------------------------------------------------- maps

@contextlib.contextmanager
def _numpy_global_seed(seed_sequence: np.random.SeedSequence):
    """Seed NumPy's global generator (healpy.synfast draws from it), restoring it afterwards."""
    saved = np.random.get_state()
    np.random.seed(seed_sequence.generate_state(8))
    try:
        yield
    finally:
        np.random.set_state(saved)


def map_seed(seed: int, index: int, stream: int = 0) -> np.random.SeedSequence:
    """The seed of map ``index`` (``stream`` 0: the sky, 1: the noise): (seed, index) only."""
    return np.random.SeedSequence([int(seed), int(index), int(stream)])


def simulate_map(cl: np.ndarray, nside: int, lmax: int, fwhm_arcmin: float, pixwin: bool,
                 noise_uk_arcmin: float, seed: int, index: int) -> np.ndarray:
    """Full-sky temperature map ``index`` (float64 [12·nside²], μK, RING).

    ``healpy.synfast`` of ``cl`` (μK² [≥ lmax+1]) up to ``lmax`` with a Gaussian beam of
    ``fwhm_arcmin``; with ``pixwin`` the spectrum is first multiplied by ``pixel_window²``
    (same statistics as filtering the harmonic coefficients, and no download); then white
    noise of ``noise_uk_arcmin`` μK·arcmin, i.e. σ = noise / pixel side per pixel.
    """
    import healpy as hp

    from cosmotrain.science.spectra import pixel_window

    spectrum = np.asarray(cl[:lmax + 1], dtype=np.float64)
    if pixwin:
        spectrum = spectrum * pixel_window(nside, lmax) ** 2
    with _numpy_global_seed(map_seed(seed, index, 0)):
        sky = hp.synfast(spectrum, nside, lmax=lmax, fwhm=np.radians(fwhm_arcmin / 60.0), pixwin=False,
                         new=True)
    if noise_uk_arcmin > 0:
        rng = np.random.default_rng(map_seed(seed, index, 1))
        sky += rng.standard_normal(sky.shape) * (noise_uk_arcmin / pixel_arcmin(nside))
    return sky


# ---------------------------------------------------------------- what the patches' spectrum is

def map_spectrum(cl: np.ndarray, nside: int, lmax: int, fwhm_arcmin: float, pixwin: bool) -> np.ndarray:
    """Signal spectrum of the simulated maps: ``C_ℓ B_ℓ² [P_ℓ²]`` (μK², float64 [lmax+1])."""
    from cosmotrain.science.spectra import beam_window, pixel_window

    out = np.asarray(cl[:lmax + 1], dtype=np.float64) * beam_window(lmax, fwhm_arcmin) ** 2
    return out * pixel_window(nside, lmax) ** 2 if pixwin else out


def patch_model(map_cl: np.ndarray, nside: int, noise_uk_arcmin: float = 0.0) -> tuple[np.ndarray, float]:
    """Spectrum of patches cut by nearest neighbour from maps of spectrum ``map_cl`` (μK²).

    Returns ``(cl, white_var)``: the coherent spectrum ``map_cl · P_ℓ²`` (float64, μK²) and
    the variance (μK²) of an uncorrelated per-sample term, to pass to
    ``spectra.theory_band_powers``. The first comes from each sample sitting up to half a map
    pixel from where it belongs (its average over the pixel is the pixel window); the
    variance this removes, ``Σ (2ℓ+1)/4π C_ℓ (1 − P_ℓ²)``, reappears as white
    pixelisation noise, to which the map's white noise (σ² per pixel) adds.
    """
    from cosmotrain.science.spectra import pixel_window

    lmax = len(map_cl) - 1
    p2 = pixel_window(nside, lmax) ** 2
    ell = np.arange(lmax + 1)
    jitter = float(np.sum((2 * ell + 1) / (4 * np.pi) * map_cl * (1.0 - p2)))
    return map_cl * p2, jitter + (noise_uk_arcmin / pixel_arcmin(nside)) ** 2


def valid_lmax(nside: int, lmax: int, reso_arcmin: float) -> float:
    """Highest ℓ where ``patch_model`` is trusted (≈1 %): min(0.8·nside, map ℓmax, patch Nyquist ℓ)."""
    from cosmotrain.science.spectra import nyquist_ell

    return float(min(0.8 * nside, lmax, nyquist_ell(reso_arcmin)))
