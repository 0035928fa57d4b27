"""Simulated CMB temperature datasets: input C_ℓ, healpy full-sky maps, gnomonic patches.

A dataset is made in three steps (``make_dataset``), the same on 1 or N MPI ranks:

1. the input spectrum: the shipped Planck 2018 best-fit TT table (``fiducial_path``), or a
   user file (``read_spectrum``: CAMB ``.dat``, two-column text, or FITS), always turned
   into C_ℓ in μK² for ℓ = 0 … ℓmax, with ℓ < 2 set to zero (no monopole or dipole);
2. full-sky maps with ``healpy.synfast`` (Gaussian beam; HEALPix pixel window; optional
   white noise), map ``i`` seeded by ``(seed, i)`` only, maps spread over ranks;
3. square patches, the gnomonic projection (north up, east left, as ``healpy.gnomview``)
   of each map onto an H×W grid of ``reso_arcmin`` pixels around fixed centres: the pixel
   centres of a coarse HEALPix grid (``centers_nside``), optionally only where the whole
   patch lies at |b| ≥ ``b_min_deg``. A patch pixel takes the value of the map pixel it
   falls in (nearest neighbour).

Conventions: temperatures in μK_CMB, C_ℓ in μK², angles in degrees (centres) or arcmin
(resolution, beam), maps in Galactic coordinates, RING ordering.

What the patches' spectrum should be (``patch_model``): nearest-neighbour sampling of a
pixelised map displaces each sample by up to half a map pixel, which multiplies the map's
spectrum by the pixel window once more (the coherent part) and adds a white floor holding
the rest of the variance. The model is accurate to ≈1 % for ℓ ≤ 0.8·nside, 2 % at nside;
beyond, pixelisation artefacts the model does not follow take over (``valid_lmax``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from cosmotrain.errors import UserError

FIDUCIAL = "planck2018_tt_cl.txt"
KIND = "cmb"
MAX_PATCH_DEG = 30.0  # larger patches are too curved for the flat-sky estimator

# Planck 2018 best fit, TT,TE,EE+lowE+lensing (Planck 2018 VI, Table 2), as CAMB's planck_2018.ini
PLANCK2018 = {"ombh2": 0.022383, "omch2": 0.12011, "cosmomc_theta": 1.040909e-2, "tau": 0.0543,
              "As": 2.100549e-9, "ns": 0.96605, "mnu": 0.06, "omk": 0.0}


# ---------------------------------------------------------------- configuration

@dataclasses.dataclass(frozen=True)
class SpectrumConfig:
    """The input TT spectrum. ``file`` None = the shipped Planck 2018 table."""

    file: Optional[str] = None
    convention: Literal["auto", "cl", "dl"] = "auto"  # dl: D_ℓ = ℓ(ℓ+1)C_ℓ/2π
    units: Literal["uK2", "K2"] = "uK2"


@dataclasses.dataclass(frozen=True)
class MapsConfig:
    """Full-sky maps: count, HEALPix resolution, band limit, beam, pixel window, noise."""

    n_maps: int = 8
    nside: int = 1024
    lmax: Optional[int] = None  # default: min(3·nside − 1, the spectrum's ℓmax)
    fwhm_arcmin: float = 10.0
    pixwin: bool = True
    noise_uk_arcmin: float = 0.0


@dataclasses.dataclass(frozen=True)
class PatchesConfig:
    """Patch grid and where patches are cut."""

    shape: tuple[int, ...] = (64, 64)
    reso_arcmin: float = 4.0
    centers_nside: int = 8
    b_min_deg: float = 20.0


@dataclasses.dataclass(frozen=True)
class SplitsConfig:
    """Fractions of all patches in each split (a seeded shuffle decides which)."""

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    samples_per_shard: int = 4096
    example_patches: int = 16  # shown in DIR/examples.png


@dataclasses.dataclass(frozen=True)
class CmbConfig:
    seed: int = 0
    spectrum: SpectrumConfig = SpectrumConfig()
    maps: MapsConfig = MapsConfig()
    patches: PatchesConfig = PatchesConfig()
    splits: SplitsConfig = SplitsConfig()
    output: OutputConfig = OutputConfig()


# ---------------------------------------------------------------- input spectrum

@dataclasses.dataclass(frozen=True, eq=False)
class Spectrum:
    """A TT spectrum as used for simulation.

    ``cl``: float64 [ℓmax+1], C_ℓ in μK², zero for ℓ < 2. ``source``: where it came from.
    ``convention``: how the file stored it ("cl" or "dl"); ``detected_by``: how we know.
    """

    cl: np.ndarray
    source: str
    convention: str
    detected_by: str

    @property
    def lmax(self) -> int:
        return len(self.cl) - 1

    def describe(self) -> dict:
        return {"source": self.source, "convention": self.convention, "detected_by": self.detected_by,
                "units": "uK^2", "lmax": self.lmax, "stored_as": "C_ell"}


def fiducial_path() -> Path:
    """The shipped Planck 2018 best-fit lensed TT C_ℓ table (μK², ℓ = 0 … 5000)."""
    return Path(__file__).with_name(FIDUCIAL)


def load_spectrum(cfg: SpectrumConfig) -> Spectrum:
    """The spectrum a config asks for (shipped table when ``cfg.file`` is None)."""
    if cfg.file is None:
        spectrum = read_spectrum(fiducial_path(), "auto", "uK2")
        return dataclasses.replace(spectrum, source=f"package:{FIDUCIAL} (Planck 2018 best fit, CAMB)")
    return read_spectrum(cfg.file, cfg.convention, cfg.units)


def read_spectrum(path: str | os.PathLike, convention: str = "auto", units: str = "uK2") -> Spectrum:
    """Read a TT spectrum file into C_ℓ (μK², float64 [ℓmax+1]).

    Accepted layouts: FITS (``healpy.read_cl``, first row = TT); text with one column
    (values for ℓ = 0, 1, …), two columns (ℓ, value) or a CAMB ``.dat`` (ℓ, TT, EE, …
    with ``D_ℓ``). A header line naming the columns (``# ell TT ...``) picks the TT column.
    ``convention`` "cl" or "dl" declares what the values are; "auto" reads it from the
    header (``C_ell``/``Cl`` or ``D_ell``/``Dl``), from the CAMB layout (D_ℓ), or from the
    spectrum's slope (C_ℓ of the CMB falls like ℓ⁻², D_ℓ does not). ``units`` "K2" for K².
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"spectrum file {p} not found; pass an existing file in spectrum.file "
                        f"(or leave it empty for the shipped Planck 2018 spectrum)")
    if p.name.lower().endswith((".fits", ".fit", ".fits.gz")):
        ell, values, hint = _read_fits(p)
    else:
        ell, values, hint = _read_text(p)
    _check_values(p, ell, values)
    if convention == "auto":
        convention, detected_by = _detect_convention(p, ell, values, hint)
    else:
        detected_by = "declared"
    cl = _to_cl(ell, values, convention) * (1e12 if units == "K2" else 1.0)
    _check_units(p, cl, units)
    return Spectrum(cl, str(p), convention, detected_by)


def _read_fits(p: Path) -> tuple[np.ndarray, np.ndarray, str | None]:
    import healpy as hp

    try:
        data = np.atleast_2d(np.asarray(hp.read_cl(str(p)), dtype=np.float64))
    except Exception as err:  # astropy raises many kinds for a bad FITS file
        raise UserError(f"spectrum file {p} is not a FITS C_ℓ table healpy can read ({err}); "
                        f"write it with healpy.write_cl or give a text file") from None
    return np.arange(data.shape[1], dtype=np.float64), data[0], "FITS (healpy.read_cl)"


def _read_text(p: Path) -> tuple[np.ndarray, np.ndarray, str | None]:
    try:
        table = np.loadtxt(p, comments="#", ndmin=2)
    except ValueError as err:
        raise UserError(f"spectrum file {p} has non-numeric or ragged rows ({err}); give whitespace-separated "
                        f"numbers, comments starting with '#'") from None
    if table.size == 0:
        raise UserError(f"spectrum file {p} holds no numbers; give columns 'ell value' or a CAMB .dat file")
    names = _header_names(p, table.shape[1])
    if table.shape[1] == 1:
        return np.arange(len(table), dtype=np.float64), table[:, 0], _convention_hint(names)
    column = _tt_column(p, table.shape[1], names)
    hint = _convention_hint(names)
    if hint is None and table.shape[1] >= 4:
        hint = "CAMB .dat layout (D_ell)"
    return table[:, 0], table[:, column], hint


def _header_names(p: Path, ncols: int) -> list[str] | None:
    """Column names from the last '#' line before the data, if it names every column."""
    last = None
    with open(p) as fh:
        for line in fh:
            stripped = line.strip()
            if not stripped:
                continue
            if not stripped.startswith("#"):
                break
            last = stripped.lstrip("#").split()
    return last if last is not None and len(last) == ncols else None


def _tt_column(p: Path, ncols: int, names: list[str] | None) -> int:
    if names is not None:
        tt = [i for i, name in enumerate(names) if "TT" in name.upper()]
        if len(tt) == 1:
            return tt[0]
        if ncols == 2:
            return 1
        raise UserError(f"spectrum file {p}: cannot tell which of the columns {names} is TT; "
                        f"name it 'TT' in the header line or give two columns 'ell value'")
    if ncols == 2 or 4 <= ncols <= 9:
        return 1  # (ℓ, value) or CAMB's (L, TT, EE, [BB,] TE, ...)
    raise UserError(f"spectrum file {p} has {ncols} unnamed columns, neither 'ell value' nor a CAMB .dat "
                    f"layout; add a header line like '# ell TT EE' or keep only the columns ell and TT")


def _convention_hint(names: list[str] | None) -> str | None:
    if not names:
        return None
    text = " ".join(names).lower()
    if any(k in text for k in ("d_ell", "d_l", "dl_", "dell", "l(l+1)")) or "dl" in [n.lower() for n in names]:
        return "dl (header)"
    if any(k in text for k in ("c_ell", "c_l", "cl_", "cell")) or "cl" in [n.lower() for n in names]:
        return "cl (header)"
    return None


def _check_values(p: Path, ell: np.ndarray, values: np.ndarray) -> None:
    if not np.all(np.isfinite(values)) or not np.all(np.isfinite(ell)):
        raise UserError(f"spectrum file {p} contains NaN or inf; fix or regenerate the file")
    if np.any(ell != np.round(ell)) or np.any(np.diff(ell) != 1) or ell[0] < 0:
        raise UserError(f"spectrum file {p}: the first column is not ℓ = ℓ0, ℓ0+1, … (unknown columns); give "
                        f"'ell value' rows with consecutive integer ℓ, or a single column of values from ℓ = 0")
    if np.any(values < 0):
        bad = int(ell[np.argmax(values < 0)])
        raise UserError(f"spectrum file {p} has negative power (first at ℓ = {bad}); a TT power spectrum is "
                        f">= 0: fix the file (wrong column? a TE spectrum?)")


def _detect_convention(p: Path, ell: np.ndarray, values: np.ndarray, hint: str | None) -> tuple[str, str]:
    if hint is not None:
        return ("dl" if hint.startswith("dl") or hint.startswith("CAMB") else "cl"), hint
    sel = (ell >= 30) & (ell <= 1500) & (values > 0)
    if sel.sum() < 10:
        raise UserError(f"spectrum file {p}: cannot tell C_ℓ from D_ℓ (too few ℓ in 30..1500); "
                        f"set spectrum.convention to cl or dl")
    slope = np.polyfit(np.log(ell[sel]), np.log(values[sel]), 1)[0]
    return ("cl" if slope < -1.0 else "dl"), f"slope {slope:.2f} of log(value) vs log(ℓ) over ℓ = 30..1500"


def _to_cl(ell: np.ndarray, values: np.ndarray, convention: str) -> np.ndarray:
    from cosmotrain.science.spectra import cl_from_dl

    lmax = int(ell[-1])
    cl = np.zeros(lmax + 1)
    cl[ell.astype(int)] = cl_from_dl(ell, values) if convention == "dl" else values
    cl[:2] = 0.0
    return cl


def _check_units(p: Path, cl: np.ndarray, units: str) -> None:
    from cosmotrain.science.spectra import dl_from_cl

    peak = dl_from_cl(np.arange(len(cl)), cl).max() if len(cl) > 2 else 0.0
    if units == "uK2" and 0 < peak < 1e-2:
        raise UserError(f"spectrum file {p}: peak D_ℓ is {peak:.2g} μK², the CMB's is ~5700 μK²: the file looks "
                        f"like K²; set spectrum.units: K2")
    if units == "K2" and peak > 1e9:
        raise UserError(f"spectrum file {p}: peak D_ℓ is {peak:.2g} μK² after converting from K²; the file "
                        f"looks like μK² already; set spectrum.units: uK2")


def camb_spectrum(lmax: int = 5000, params: dict | None = None) -> tuple[np.ndarray, list[str]]:
    """Lensed TT C_ℓ (μK², float64 [lmax+1]) from CAMB, and header lines describing it.

    Needs the optional ``camb`` package (``pip install 'cosmotrain[camb]'``).
    """
    try:
        import camb
    except ImportError:
        raise UserError("CAMB is not installed: pip install 'cosmotrain[camb]' (or omit --camb to copy the "
                        "shipped Planck 2018 table)") from None
    params = dict(PLANCK2018 if params is None else params)
    pars = camb.set_params(**params)
    pars.set_for_lmax(lmax, lens_potential_accuracy=1)
    results = camb.get_results(pars)
    cl = results.get_cmb_power_spectra(pars, CMB_unit="muK", raw_cl=True, lmax=lmax)["total"][:, 0]
    header = ["cosmotrain fiducial CMB temperature power spectrum (lensed scalar TT)",
              "Planck 2018 best fit, TT,TE,EE+lowE+lensing (Planck 2018 VI, Table 2)",
              " ".join(f"{k}={v!r}" for k, v in params.items()),
              f"made with CAMB {camb.__version__} (lens_potential_accuracy=1), T_CMB = {pars.TCMB} K",
              "units uK^2; C_ell, not D_ell = ell(ell+1)C_ell/2pi; ell = 0,1 are 0",
              "ell C_ell_TT"]
    return np.asarray(cl, dtype=np.float64), header


def write_spectrum(path: str | os.PathLike, cl: np.ndarray, header: list[str]) -> None:
    """Write C_ℓ (μK²) as a two-column text table ``ell C_ell`` with ``#`` header lines, atomically."""
    from cosmotrain.config import atomic_write_text

    lines = [f"# {h}" for h in header]
    lines += [f"{ell:d} {value:.10e}" for ell, value in enumerate(np.asarray(cl, dtype=np.float64))]
    atomic_write_text(path, "\n".join(lines) + "\n")


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


# ---------------------------------------------------------------- checks before any work

def resolve_lmax(maps: MapsConfig, spectrum: Spectrum) -> int:
    """The band limit: ``maps.lmax`` or min(3·nside − 1, spectrum ℓmax)."""
    return maps.lmax if maps.lmax is not None else min(3 * maps.nside - 1, spectrum.lmax)


def check_config(cfg: CmbConfig, spectrum: Spectrum) -> list[str]:
    """Raise UserError for a config that cannot work; return warnings for dubious ones.

    Everything here is cheap and runs before any map is made.
    """
    m, p = cfg.maps, cfg.patches
    _check_healpix(m, spectrum)
    shape = _check_patch_shape(p)
    centers = _check_centers(p, shape)
    _check_splits(cfg.splits, len(centers) * m.n_maps)
    warnings = []
    pix = pixel_arcmin(m.nside)
    if p.reso_arcmin < pix / 2.0:
        warnings.append(f"patch pixels of {p.reso_arcmin:g}' are much finer than the {pix:.2f}' map pixels of "
                        f"nside {m.nside}: neighbouring patch pixels repeat one map value; raise maps.nside to "
                        f"{_nside_for(p.reso_arcmin)} or patches.reso_arcmin to {pix:.1f}")
    if m.fwhm_arcmin < pix:
        warnings.append(f"a beam of {m.fwhm_arcmin:g}' FWHM is smaller than the {pix:.2f}' map pixels: the patches "
                        f"will be dominated by pixelisation at small scales; use maps.fwhm_arcmin >= {2 * pix:.1f}")
    return warnings


def _nside_for(reso_arcmin: float) -> int:
    nside = 1
    while pixel_arcmin(nside) > reso_arcmin:
        nside *= 2
    return nside


def _check_healpix(m: MapsConfig, spectrum: Spectrum) -> None:
    if m.nside < 1 or m.nside & (m.nside - 1) or m.nside > 8192:
        raise UserError(f"maps.nside = {m.nside} is not a power of two between 1 and 8192; use e.g. "
                        f"{max(1, 1 << max(0, int(m.nside).bit_length() - 1))}")
    lmax = resolve_lmax(m, spectrum)
    if lmax > 3 * m.nside - 1:
        raise UserError(f"maps.lmax = {lmax} exceeds 3·nside − 1 = {3 * m.nside - 1} for nside {m.nside}; "
                        f"lower maps.lmax or raise maps.nside")
    if lmax < 2:
        raise UserError(f"maps.lmax = {lmax} leaves no multipole to simulate; use maps.lmax >= 2")
    if lmax > spectrum.lmax:
        raise UserError(f"the spectrum {spectrum.source} stops at ℓ = {spectrum.lmax}, maps.lmax is {lmax}; lower "
                        f"maps.lmax or give a spectrum reaching ℓ = {lmax}")
    if m.n_maps < 1:
        raise UserError(f"maps.n_maps = {m.n_maps}; make at least 1 map")
    if m.fwhm_arcmin < 0 or m.noise_uk_arcmin < 0:
        raise UserError("maps.fwhm_arcmin and maps.noise_uk_arcmin must be >= 0")


def _check_patch_shape(p: PatchesConfig) -> tuple[int, int]:
    if len(p.shape) != 2 or min(p.shape) < 8:
        raise UserError(f"patches.shape = {list(p.shape)}; give two sizes of at least 8 pixels, e.g. [64, 64]")
    if p.reso_arcmin <= 0:
        raise UserError(f"patches.reso_arcmin = {p.reso_arcmin}; give a positive pixel size in arcmin")
    side = max(p.shape) * p.reso_arcmin / 60.0
    if side > MAX_PATCH_DEG:
        raise UserError(f"patches of {max(p.shape)} pixels of {p.reso_arcmin:g}' are {side:.1f}° wide, too large "
                        f"for a flat (gnomonic) patch; keep them under {MAX_PATCH_DEG:.0f}° (fewer or finer pixels)")
    return int(p.shape[0]), int(p.shape[1])


def _check_centers(p: PatchesConfig, shape: tuple[int, int]) -> np.ndarray:
    nc = p.centers_nside
    if nc < 1 or nc & (nc - 1):
        raise UserError(f"patches.centers_nside = {nc} is not a power of two; use e.g. 8")
    reach = patch_half_diagonal_deg(shape, p.reso_arcmin)
    centers = patch_centers(nc, p.b_min_deg, reach)
    if len(centers) == 0:
        raise UserError(f"no {shape[0]}x{shape[1]} patch ({reach:.1f}° centre to corner) fits outside "
                        f"|b| < {p.b_min_deg:g}° on the centres of nside {nc}; lower patches.b_min_deg")
    separation = min_separation_deg(centers)
    if separation < 2.0 * reach:
        need = 2.0 * reach / separation
        raise UserError(f"patches overlap: {shape[0]}x{shape[1]} pixels of {p.reso_arcmin:g}' reach {reach:.2f}° "
                        f"from their centre, but centres of nside {nc} are only {separation:.2f}° apart; lower "
                        f"patches.centers_nside to {max(1, nc // 2)} or make patches {need:.2f}x smaller")
    return centers


def _check_splits(s: SplitsConfig, n: int) -> None:
    fractions = (s.train, s.val, s.test)
    if min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise UserError(f"splits train/val/test = {fractions} must be >= 0 and add up to 1")
    counts = split_counts(n, fractions)
    for name, f, c in zip(("train", "val", "test"), fractions, counts):
        if f > 0 and c == 0:
            raise UserError(f"split {name} would be empty with {n} patches in all; make more maps or "
                            f"raise splits.{name}")


# ---------------------------------------------------------------- splits

def split_counts(n: int, fractions: tuple[float, ...]) -> np.ndarray:
    """Sizes (int64 [K]) of consecutive parts of ``n`` in ``fractions``; they add up to ``n``."""
    bounds = np.rint(np.cumsum((0.0,) + tuple(fractions)) * n).astype(np.int64)
    bounds[-1] = n
    return np.diff(bounds)


def split_assignment(n: int, fractions: tuple[float, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``n`` patches (global index map·Nc + j): its split (int8) and position in it (int64).

    A seeded shuffle picks the members of each split; within a split patches keep their
    global order. Depends on (n, fractions, seed) only, never on the number of ranks.
    """
    order = np.random.default_rng([int(seed), 0x5EED]).permutation(n)
    split = np.empty(n, np.int8)
    start = 0
    for k, count in enumerate(split_counts(n, fractions)):
        split[order[start:start + count]] = k
        start += count
    position = np.empty(n, np.int64)
    for k in range(len(fractions)):
        members = np.flatnonzero(split == k)
        position[members] = np.arange(len(members))
    return split, position


# ---------------------------------------------------------------- the whole dataset

SPLITS = ("train", "val", "test")


def dataset_attrs(cfg: CmbConfig, spectrum: Spectrum, lmax: int) -> dict:
    """HDF5 attributes of every shard (DESIGN: nside, lmax, fwhm_arcmin, reso_arcmin, cl_source, seed)."""
    m, p = cfg.maps, cfg.patches
    return {"nside": m.nside, "lmax": lmax, "fwhm_arcmin": m.fwhm_arcmin, "reso_arcmin": p.reso_arcmin,
            "cl_source": spectrum.source, "seed": cfg.seed, "pixwin": m.pixwin,
            "noise_uk_arcmin": m.noise_uk_arcmin, "units": "uK_CMB", "projection": "gnomonic, nearest pixel",
            "cl_convention": spectrum.convention}


def make_dataset(cfg: CmbConfig, out_dir: str | os.PathLike, overwrite: bool = False) -> dict | None:
    """Simulate maps over MPI ranks, cut patches, write the sharded dataset (rank 0 writes).

    Call after ``dist.init_mpi()`` (or in a single process). Every rank checks the config
    first, so bad input fails before any map. Map ``i`` is made by rank ``i mod size``; after
    each round of maps rank 0 gathers the patches into per-split arrays on disk, so memory
    stays bounded by one map per rank. Returns the manifest on rank 0, None elsewhere.
    """
    from cosmotrain import dist, logs
    from cosmotrain.data import shards
    from cosmotrain.science.spectra import pixel_window

    log = logs.get("cmb")
    ctx = dist.context()
    out = shards.claim_output(out_dir, overwrite)
    spectrum = load_spectrum(cfg.spectrum)
    warnings = check_config(cfg, spectrum)
    if ctx.is_root:
        for text in warnings:
            log.warning(text)
    lmax = resolve_lmax(cfg.maps, spectrum)
    shape = (int(cfg.patches.shape[0]), int(cfg.patches.shape[1]))
    centers = patch_centers(cfg.patches.centers_nside, cfg.patches.b_min_deg,
                            patch_half_diagonal_deg(shape, cfg.patches.reso_arcmin))
    pixels = patch_pixels(cfg.maps.nside, centers, shape, cfg.patches.reso_arcmin)
    n_total = len(centers) * cfg.maps.n_maps
    if cfg.maps.pixwin:
        pixel_window(cfg.maps.nside, lmax)  # computed once per process, before the clock starts
    log.info("%d maps (nside %d, lmax %d, beam %g') -> %d patches of %dx%d at %g' from %s, on %d rank(s)",
             cfg.maps.n_maps, cfg.maps.nside, lmax, cfg.maps.fwhm_arcmin, n_total, shape[0], shape[1],
             cfg.patches.reso_arcmin, spectrum.source, ctx.size)
    start = time.perf_counter()
    writer = _SplitWriter(out, cfg, n_total, shape) if ctx.is_root else None
    try:
        _simulate_rounds(cfg, spectrum.cl, lmax, pixels, writer)
        if writer is None:
            return None
        seconds = time.perf_counter() - start
        manifest = _write_outputs(out, cfg, spectrum, lmax, writer.splits(centers),
                                  {"simulation_seconds": round(seconds, 3), "ranks": ctx.size,
                                   "patches": {"per_map": len(centers), "shape": list(shape),
                                               "maps": cfg.maps.n_maps}})
    finally:
        if writer is not None:
            writer.close()
    if cfg.output.example_patches > 0:
        _plot_examples_safely(out, cfg)
    log.info("wrote %s: %s patches in %.1f s", out,
             ", ".join(f"{s} {e['n']}" for s, e in manifest["splits"].items()), seconds)
    return manifest


def _write_outputs(out: Path, cfg: CmbConfig, spectrum: Spectrum, lmax: int, splits: dict, extra: dict) -> dict:
    """The input C_ℓ next to the data, then the shards and the manifest (last)."""
    from cosmotrain.data import shards

    write_spectrum(out / "cl_input.txt", spectrum.cl[:lmax + 1],
                   [f"input TT spectrum of this dataset, read from {spectrum.source}",
                    f"the file held {spectrum.convention} (decided by: {spectrum.detected_by}); units uK^2",
                    "ell C_ell_TT"])
    return shards.write_dataset(
        out, KIND, splits, dataset_attrs(cfg, spectrum, lmax), config=_config_dict(cfg), seed=cfg.seed,
        samples_per_shard=cfg.output.samples_per_shard,
        extra={"spectrum": {**spectrum.describe(), "file_in_dataset": "cl_input.txt"}, **extra})


def _config_dict(cfg: CmbConfig) -> dict:
    from cosmotrain.config import to_dict

    return to_dict(cfg)


def _simulate_rounds(cfg: CmbConfig, cl: np.ndarray, lmax: int, pixels: np.ndarray,
                     writer: "_SplitWriter | None") -> None:
    """Round k: rank r makes map k·size + r (if it exists); rank 0 gathers the patches."""
    from cosmotrain import dist, logs

    ctx = dist.context()
    m = cfg.maps
    rounds = -(-m.n_maps // ctx.size)
    with logs.progress(total=m.n_maps, unit="map", desc="maps") as bar:
        for k in range(rounds):
            index = k * ctx.size + ctx.rank
            mine = None
            if index < m.n_maps:
                sky = simulate_map(cl, m.nside, lmax, m.fwhm_arcmin, m.pixwin, m.noise_uk_arcmin, cfg.seed, index)
                mine = (index, cut_patches(sky, pixels))
                del sky
            everyone = dist.gather_object(mine)
            if writer is not None:
                done = [item for item in everyone if item is not None]
                for index, patches in done:
                    writer.add(index, patches)
                bar.update(len(done))


class _SplitWriter:
    """Rank 0's per-split arrays on disk (memory-mapped), filled map by map."""

    def __init__(self, out: Path, cfg: CmbConfig, n_total: int, shape: tuple[int, int]):
        fractions = (cfg.splits.train, cfg.splits.val, cfg.splits.test)
        self.split, self.position = split_assignment(n_total, fractions, cfg.seed)
        self.per_map = n_total // cfg.maps.n_maps
        out.mkdir(parents=True, exist_ok=True)
        self.paths = [out / f".{name}-patches.tmp.npy" for name in SPLITS]
        self.arrays = [np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                                 shape=(int((self.split == k).sum()),) + shape)
                       for k, path in enumerate(self.paths)]

    def add(self, index: int, patches: np.ndarray) -> None:
        g = index * self.per_map + np.arange(len(patches))
        for k, array in enumerate(self.arrays):
            sel = self.split[g] == k
            array[self.position[g[sel]]] = patches[sel]

    def splits(self, centers: np.ndarray) -> dict:
        n_maps = len(self.split) // self.per_map
        all_centers = np.tile(centers, (n_maps, 1))
        out = {}
        for k, name in enumerate(SPLITS):
            members = np.flatnonzero(self.split == k)
            if len(members):
                self.arrays[k].flush()
                out[name] = {"patches": self.arrays[k], "centers": all_centers[members]}
        return out

    def close(self) -> None:
        self.arrays = []
        for path in self.paths:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------- pictures

def _plot_examples_safely(out: Path, cfg: CmbConfig) -> None:
    from cosmotrain import logs
    from cosmotrain.data import shards

    try:
        data = shards.ShardSet(out, "train" if cfg.splits.train > 0 else "test", kind=KIND)
        n = min(cfg.output.example_patches, data.n)
        sample = data.read(0, n)
        data.close()
        plot_examples(sample["patches"], sample["centers"], cfg.patches.reso_arcmin, out / "examples.png")
    except Exception as err:  # a picture must never fail a finished dataset
        logs.get("cmb").warning("could not draw %s/examples.png: %s", out, err)


def plot_examples(patches: np.ndarray, centers: np.ndarray, reso_arcmin: float, path: str | os.PathLike) -> None:
    """A grid of patches (float [N, H, W], μK) on one symmetric colour scale with a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(patches)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    limit = float(np.percentile(np.abs(patches), 99.5)) or 1.0
    side = patches.shape[2] * reso_arcmin / 60.0
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols + 1.2, 2.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i in range(n):
        ax = axes.ravel()[i]
        image = ax.imshow(patches[i], cmap="RdBu_r", vmin=-limit, vmax=limit,
                          extent=(side / 2, -side / 2, -side / 2, side / 2))
        ax.set_title(f"l={centers[i, 0]:.0f}° b={centers[i, 1]:.0f}°", fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="T [μK_CMB]")
    fig.suptitle(f"CMB patches, {patches.shape[1]}x{patches.shape[2]} px of {reso_arcmin:g}' ({side:.1f}° wide)")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def read_dataset_spectrum(root: str | os.PathLike) -> np.ndarray:
    """The input C_ℓ (μK², float64 [lmax+1]) stored with a dataset (``cl_input.txt``)."""
    path = Path(root) / "cl_input.txt"
    if not path.is_file():
        raise UserError(f"{root} has no cl_input.txt (the input spectrum); regenerate the dataset with "
                        f"'cosmotrain data cmb'")
    table = np.loadtxt(path, comments="#", ndmin=2)
    return table[:, 1].astype(np.float64)


# ---------------------------------------------------------------- measuring a dataset

def dataset_theory(root: str | os.PathLike, attrs: dict, binning, transfer: np.ndarray | None = None) -> np.ndarray:
    """Expected band powers (μK², float64 [nbins]) of a dataset's patches (``patch_model``)."""
    from cosmotrain.science.spectra import theory_band_powers

    cl = read_dataset_spectrum(root)
    nside, lmax = int(attrs["nside"]), int(attrs["lmax"])
    map_cl = map_spectrum(cl, nside, lmax, float(attrs["fwhm_arcmin"]), bool(attrs.get("pixwin", False)))
    coherent, white = patch_model(map_cl, nside, float(attrs.get("noise_uk_arcmin", 0.0)))
    return theory_band_powers(coherent, binning, transfer, white_var=white)


def dataset_transfer(attrs: dict, lmax: int) -> np.ndarray:
    """What the patches' signal went through, as an amplitude ``T_ℓ`` (float64 [lmax+1]).

    Beam × (pixel window if the maps had it) × pixel window of the nearest-pixel projection.
    """
    from cosmotrain.science.spectra import beam_window, pixel_window

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
    from cosmotrain import dist
    from cosmotrain.data import shards
    from cosmotrain.science import spectra

    data = shards.ShardSet(root, split, kind=KIND)
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
    ctx = dist.context()
    lo, hi = n * ctx.rank // ctx.size, n * (ctx.rank + 1) // ctx.size
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
