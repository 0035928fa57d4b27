"""The input TT spectrum of a CMB dataset: the shipped Planck 2018 table, a user's file, or CAMB.

Whatever the source, a spectrum becomes C_ℓ in μK² for ℓ = 0 … ℓmax, with ℓ < 2 set to
zero (no monopole or dipole). Files may be CAMB ``.dat`` tables (D_ℓ), two-column text
(``ell value``, C_ℓ or D_ℓ, told apart by a header or by the spectrum's slope), one column of
values from ℓ = 0, or FITS (``healpy.read_cl``); μK² or K². ``write_spectrum`` writes the
two-column table a dataset keeps beside its patches (``cl_input.txt``).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from cosmotrain.errors import UserError
from cosmotrain.files import atomic_write_text

FIDUCIAL = "planck2018_tt_cl.txt"
INPUT_FILE = "cl_input.txt"  # a dataset's own copy of its input spectrum

# Planck 2018 best fit, TT,TE,EE+lowE+lensing (Planck 2018 VI, Table 2), as CAMB's planck_2018.ini
PLANCK2018 = {"ombh2": 0.022383, "omch2": 0.12011, "cosmomc_theta": 1.040909e-2, "tau": 0.0543,
              "As": 2.100549e-9, "ns": 0.96605, "mnu": 0.06, "omk": 0.0}



@dataclasses.dataclass(frozen=True)
class SpectrumConfig:
    """The input TT spectrum. ``file`` None = the shipped Planck 2018 table."""

    file: Optional[str] = None
    convention: Literal["auto", "cl", "dl"] = "auto"  # dl: D_ℓ = ℓ(ℓ+1)C_ℓ/2π
    units: Literal["uK2", "K2"] = "uK2"


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
    lines = [f"# {h}" for h in header]
    lines += [f"{ell:d} {value:.10e}" for ell, value in enumerate(np.asarray(cl, dtype=np.float64))]
    atomic_write_text(path, "\n".join(lines) + "\n")



def read_dataset_spectrum(root: str | os.PathLike) -> np.ndarray:
    """The input C_ℓ (μK², float64 [lmax+1]) stored with a dataset (``INPUT_FILE``)."""
    path = Path(root) / INPUT_FILE
    if not path.is_file():
        raise UserError(f"{root} has no cl_input.txt (the input spectrum); regenerate the dataset with "
                        f"'cosmotrain data cmb'")
    table = np.loadtxt(path, comments="#", ndmin=2)
    return table[:, 1].astype(np.float64)


def copy_spectrum(out: str | os.PathLike, camb: bool = False, lmax: int = 5000) -> None:
    """``cosmotrain data cmb-spectrum``: the shipped table (with ``camb``: CAMB's, to ``lmax``) written to ``out``."""
    from cosmotrain import logs

    if camb:
        cl, header = camb_spectrum(lmax)
    else:
        cl = load_spectrum(SpectrumConfig()).cl
        with open(fiducial_path()) as fh:
            header = [line.rstrip("\n").lstrip("# ") for line in fh if line.startswith("#")]
    write_spectrum(out, cl, header)
    logs.get("cmb").info("wrote %s (ℓ = 0..%d, C_ℓ in μK²)", out, len(cl) - 1)
