"""The survey-like galaxy population: what each synthetic galaxy is and how SDSS would see it.

``draw(rng, n)`` returns the parameters of ``n`` galaxies, each a float64 array [n]:

* **kind** (``KINDS``): ellipticals, lenticulars (bulge + disk, no arms), spirals (bulge-to-total
  0–0.55, arms from grand design to faint and flocculent, a third barred, star-forming knots),
  irregulars (clumpy, lopsided) and mergers (a companion and tidal tails);
* **structure**: bulge Sérsic index, radius and axis ratio; disk inclination (isotropic,
  ``cos_i`` uniform), intrinsic thickness, dust; arms (amplitude, number, pitch, coherence),
  bar, knots;
* **observing**: Petrosian R90 in arcsec (log-normal, median 7"), seeing FWHM (SDSS-like,
  median 1.4"), mean surface brightness within R50 (mag/arcsec²), sky noise, colours
  (tints 0 red .. 1 blue, per component, with a common reddening);
* **the field**: 0–2 neighbouring galaxies and 0–3 foreground stars.

Every parameter is drawn for every galaxy whatever its kind, so the random stream does not
depend on the kinds. Lengths are in units of the galaxy's Petrosian R90: like the Kaggle
cut-outs (424 px = 8.48 R90, of which the ingest keeps the central half), a synthetic image is
``FIELD`` R90 wide whatever the galaxy's size in arcsec; a small (distant) galaxy is therefore
not smaller in the image, but blurrier (seeing is larger in R90 units) and noisier.
"""
from __future__ import annotations

import numpy as np
from scipy import special

KINDS = ("elliptical", "lenticular", "spiral", "irregular", "merger")
ELLIPTICAL, LENTICULAR, SPIRAL, IRREGULAR, MERGER = range(len(KINDS))
KIND_WEIGHTS = (0.18, 0.26, 0.48, 0.04, 0.04)
FIELD = 4.24            # image side in Petrosian R90 (the central 212 of 424 px at 0.02 R90 per px)
MU_REF = 19.0           # mag/arcsec² shown as display value 1 (before the asinh stretch)
SKY_NOISE_MU = 24.3     # r-band sky noise of one 0.396" SDSS pixel, as a surface brightness (mag/arcsec²)
SDSS_PIXEL = 0.396      # arcsec
MAX_CLUMPS, MAX_NEIGHBOURS, MAX_STARS = 8, 2, 3
_RADII = np.logspace(-2.5, 2.0, 500)  # radii (in h, or R_e of an elliptical) for the Petrosian radii


def draw(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Parameters of ``n`` galaxies (float64 [n] each); lengths in R90, angles in radians."""
    p = {"kind": rng.choice(len(KINDS), n, p=KIND_WEIGHTS).astype(np.float64)}
    p.update(_structure(rng, n, p["kind"]))
    p.update(_arms_bar_knots(rng, n, p["kind"], p["bt"]))
    p.update(_colours(rng, n, p["kind"], p["bt"]))
    p.update(_observing(rng, n, p["kind"], p["bt"]))
    p.update(_field(rng, n))
    _to_r90_units(p, rng.lognormal(0.0, 0.08, n))
    return p


def _u(rng, n, lo, hi):
    return rng.uniform(lo, hi, n)


def _by_kind(kind: np.ndarray, values: dict[int, np.ndarray], default: np.ndarray) -> np.ndarray:
    out = np.array(default, dtype=np.float64, copy=True)
    for k, v in values.items():
        out = np.where(kind == k, v, out)
    return out


def _structure(rng, n: int, kind: np.ndarray) -> dict:
    """Bulge and disk, in units of the disk scale length (an elliptical's R_e is 1)."""
    u_n, spiral_bt = rng.uniform(0, 1, n), 0.6 * rng.beta(1.2, 2.2, n)
    bt = _by_kind(kind, {ELLIPTICAL: np.ones(n), LENTICULAR: _u(rng, n, 0.1, 0.65), IRREGULAR: np.zeros(n)},
                  spiral_bt)
    n_b = _by_kind(kind, {ELLIPTICAL: 1.5 + 2.5 * u_n, LENTICULAR: 1.5 + 2.5 * u_n}, 1.0 + 2.0 * u_n)
    cos_i = rng.uniform(0, 1, n)
    q0 = _by_kind(kind, {LENTICULAR: _u(rng, n, 0.12, 0.24), IRREGULAR: _u(rng, n, 0.25, 0.45)},
                  _u(rng, n, 0.08, 0.2))
    q_elliptical = 1.0 - 0.72 * rng.beta(1.6, 3.0, n)
    qb0 = _u(rng, n, 0.55, 0.9)
    q_bulge = np.sqrt(cos_i ** 2 + qb0 ** 2 * (1 - cos_i ** 2))
    return {"bt": bt, "n_b": n_b, "re_b": np.where(kind == ELLIPTICAL, 1.0, _u(rng, n, 0.15, 0.6)),
            "q_b": np.where(kind == ELLIPTICAL, q_elliptical, q_bulge), "h": np.ones(n), "cos_i": cos_i,
            "q_disk": np.sqrt(cos_i ** 2 + q0 ** 2 * (1 - cos_i ** 2)), "q0": q0,
            "pa": _u(rng, n, 0, np.pi), "x0": rng.normal(0, 0.03, n), "y0": rng.normal(0, 0.03, n),
            "dust": _u(rng, n, 0, 1) * _by_kind(kind, {SPIRAL: np.ones(n), LENTICULAR: np.full(n, 0.4)},
                                                np.zeros(n))}


def _arms_bar_knots(rng, n: int, kind: np.ndarray, bt: np.ndarray) -> dict:
    """Spiral arms, bars and star-forming knots (in units of the disk scale length)."""
    spiral, disk = kind == SPIRAL, (kind == SPIRAL) | (kind == LENTICULAR)
    coherence = rng.uniform(0, 1, n)
    m = np.where(coherence > 0.5, rng.choice([2.0, 2.0, 3.0, 4.0], n), rng.integers(3, 6, n).astype(np.float64))
    p = {"arm_amp": np.where(spiral, 0.95 * rng.beta(2.5, 1.0, n), 0.0), "coherence": coherence, "arms": m,
         "pitch": np.deg2rad(_u(rng, n, 12, 35)), "winding": rng.choice([-1.0, 1.0], n),
         "arm_phase": _u(rng, n, 0, 2 * np.pi), "arm_sharp": 1.0 + 2.0 * coherence * rng.uniform(0.5, 1.0, n),
         "bar": ((rng.uniform(0, 1, n) < np.where(spiral, 0.35, 0.15)) & disk).astype(np.float64), "bar_len": _u(rng, n, 0.6, 1.5),
         "bar_q": _u(rng, n, 0.25, 0.45), "bar_frac": _u(rng, n, 0.05, 0.15), "bar_angle": _u(rng, n, 0, np.pi),
         "lopsided": np.where(kind == IRREGULAR, _u(rng, n, 0.3, 0.7), 0.0), "lop_angle": _u(rng, n, 0, 2 * np.pi)}
    knots = np.where(spiral, rng.poisson(3.0 * np.clip(1 - bt / 0.55, 0, 1)), np.where(kind == IRREGULAR, rng.integers(5, 9, n), 0))
    p["n_clumps"] = np.minimum(knots, MAX_CLUMPS).astype(np.float64)
    bright = np.where(kind == IRREGULAR, 2.5, 1.0)
    for k in range(MAX_CLUMPS):
        p[f"clump{k}_r"], p[f"clump{k}_t"] = _u(rng, n, 0.4, 2.6), _u(rng, n, 0, 2 * np.pi)
        p[f"clump{k}_f"], p[f"clump{k}_s"] = bright * np.exp(_u(rng, n, np.log(0.006), np.log(0.03))), \
            _u(rng, n, 0.08, 0.2)
    return p


def _colours(rng, n: int, kind: np.ndarray, bt: np.ndarray) -> dict:
    """Tints (0 red .. 1 blue) of bulge, disk and arms/knots, plus a common reddening (dust, redshift)."""
    late = 1.0 - np.clip(bt / 0.55, 0, 1)
    t_disk = _by_kind(kind, {ELLIPTICAL: rng.normal(0.28, 0.14, n), LENTICULAR: rng.normal(0.32, 0.14, n),
                             IRREGULAR: rng.normal(0.7, 0.12, n)}, rng.normal(0.34 + 0.08 * late, 0.14, n))
    t_bulge = np.where(kind == ELLIPTICAL, t_disk, rng.normal(0.25, 0.1, n))
    redden = rng.normal(0.0, 0.15, n)
    return {"t_bulge": t_bulge - redden, "t_disk": t_disk - redden,
            "t_arm": np.clip(t_disk + rng.uniform(0.05, 0.2, n), None, 1.0) - redden}


def _observing(rng, n: int, kind: np.ndarray, bt: np.ndarray) -> dict:
    """Angular size, seeing, surface brightness (mag/arcsec² within R50), and the companion of mergers."""
    mu50 = _by_kind(kind, {ELLIPTICAL: rng.normal(20.2, 0.6, n), LENTICULAR: rng.normal(20.6, 0.6, n),
                           IRREGULAR: rng.normal(22.2, 0.5, n)}, rng.normal(21.1 - 1.2 * bt, 0.6, n))
    merger = kind == MERGER
    return {"r90_arcsec": np.clip(10 ** rng.normal(0.9, 0.17, n), 3.0, 40.0),
            "fwhm_arcsec": np.clip(1.4 * 10 ** rng.normal(0.0, 0.07, n), 0.9, 2.2), "mu50": mu50,
            "comp_dist": _u(rng, n, 0.3, 1.0), "comp_angle": _u(rng, n, 0, 2 * np.pi),
            "comp_re": _u(rng, n, 0.3, 0.8), "comp_n": _u(rng, n, 1.0, 4.0), "comp_q": _u(rng, n, 0.4, 1.0),
            "comp_pa": _u(rng, n, 0, np.pi), "comp_flux": np.where(merger, _u(rng, n, 0.3, 1.0), 0.0),
            "comp_tint": rng.normal(0.35, 0.15, n), "tail_amp": np.where(merger, _u(rng, n, 0.08, 0.25), 0.0),
            "tail_pitch": np.deg2rad(_u(rng, n, 35, 60))}


def _field(rng, n: int) -> dict:
    """Neighbouring galaxies and foreground stars anywhere in the cut-out (positions in R90)."""
    half = FIELD / 2
    p = {"n_neighbours": np.minimum(rng.poisson(0.7, n), MAX_NEIGHBOURS).astype(np.float64),
         "n_stars": np.minimum(rng.poisson(0.6, n), MAX_STARS).astype(np.float64)}
    for k in range(MAX_NEIGHBOURS):
        r, t = _u(rng, n, 0.5, 1.15 * half * np.sqrt(2)), _u(rng, n, 0, 2 * np.pi)
        p.update({f"nb{k}_x": r * np.cos(t), f"nb{k}_y": r * np.sin(t),
                  f"nb{k}_re": np.exp(_u(rng, n, np.log(0.06), np.log(0.45))), f"nb{k}_n": _u(rng, n, 1.0, 4.0),
                  f"nb{k}_q": _u(rng, n, 0.3, 1.0), f"nb{k}_pa": _u(rng, n, 0, np.pi),
                  f"nb{k}_mu": rng.normal(21.3, 0.8, n), f"nb{k}_tint": _u(rng, n, 0.05, 0.85)})
    for k in range(MAX_STARS):
        p.update({f"star{k}_x": _u(rng, n, -half, half), f"star{k}_y": _u(rng, n, -half, half),
                  f"star{k}_peak": np.exp(_u(rng, n, np.log(0.05), np.log(4.0))), f"star{k}_tint": _u(rng, n, 0, 1)})
    return p


# ---------------------------------------------------------------- sizes: SDSS Petrosian radii

def sersic_b(n: np.ndarray) -> np.ndarray:
    """b_n of Sérsic profiles of index ``n`` (float [N]): half the light lies within R_e."""
    return special.gammaincinv(2.0 * np.asarray(n, np.float64), 0.5)


def growth_curves(bt, n_b, re_b, h, radii: np.ndarray = _RADII) -> tuple[np.ndarray, np.ndarray]:
    """Surface brightness and enclosed light (float64 [N, R] each) of bulge + exponential disk, total 1.

    ``bt`` [N] is the bulge's share, ``n_b``/``re_b`` its Sérsic index and effective radius,
    ``h`` the disk scale length (any length unit, that of ``radii`` [R]); circular profiles.
    """
    n, b = np.asarray(n_b)[:, None], sersic_b(n_b)[:, None]
    x = radii[None, :] / np.asarray(re_b)[:, None]
    norm = 2 * np.pi * n * np.asarray(re_b)[:, None] ** 2 * np.exp(b) * b ** (-2 * n) * special.gamma(2 * n)
    bulge_i, bulge_l = np.exp(-b * (x ** (1 / n) - 1)) / norm, special.gammainc(2 * n, b * x ** (1 / n))
    y = radii[None, :] / np.asarray(h)[:, None]
    disk_i, disk_l = np.exp(-y) / (2 * np.pi * np.asarray(h)[:, None] ** 2), 1 - (1 + y) * np.exp(-y)
    w = np.asarray(bt)[:, None]
    return w * bulge_i + (1 - w) * disk_i, w * bulge_l + (1 - w) * disk_l


def petrosian_radii(bt, n_b, re_b, h, radii: np.ndarray = _RADII) -> tuple[np.ndarray, np.ndarray]:
    """(R50, R90) float64 [N] as SDSS measures them: radii holding 50 % and 90 % of the Petrosian flux.

    The Petrosian radius r_P is where the surface brightness falls to 0.2 of the mean within
    it; the Petrosian flux is the light within 2 r_P. Same units as ``radii``.
    """
    sb, enclosed = growth_curves(bt, n_b, re_b, h, radii)
    ratio = sb / (enclosed / (np.pi * radii[None, :] ** 2))
    r_p = radii[np.argmax(ratio < 0.2, axis=1)]
    flux = np.array([np.interp(2 * rp, radii, row) for rp, row in zip(r_p, enclosed)])
    r50 = np.array([np.interp(0.5 * f, row, radii) for f, row in zip(flux, enclosed)])
    r90 = np.array([np.interp(0.9 * f, row, radii) for f, row in zip(flux, enclosed)])
    return r50, r90


def _to_r90_units(p: dict, jitter: np.ndarray) -> None:
    """Measure each galaxy's Petrosian R50 and R90 and express every length in R90 (in place).

    Circular apertures on an inclined galaxy enclose less than on the face-on one; the
    factor 0.72 + 0.28 q² (fitted to exponential disks) corrects the face-on R90. ``jitter``
    [N] is the scatter of SDSS's measurement (neighbours, deblending).
    """
    q_light = np.where(p["bt"] >= 1, p["q_b"], p["bt"] * p["q_b"] + (1 - p["bt"]) * p["q_disk"])
    r50, r90 = petrosian_radii(p["bt"], p["n_b"], p["re_b"], p["h"])
    unit = r90 * (0.72 + 0.28 * q_light ** 2) * jitter
    for key in ("re_b", "h"):
        p[key] = p[key] / unit
    p["r50"] = r50 / (r90 * jitter)
    p["fwhm"] = p["fwhm_arcsec"] / p["r90_arcsec"]
