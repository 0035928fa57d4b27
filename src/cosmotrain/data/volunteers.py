"""Simulated Galaxy Zoo volunteers: vote fractions for round / edge-on / spiral, from what is visible.

For each galaxy (``population.draw``) an observer model turns what a person can see in the
cut-out into the probability that one volunteer answers each of the three questions' answers:

* **round** (smooth, completely round): the galaxy looks round after the seeing and shows no
  features (arms, bar, knots, lopsidedness);
* **edge-on**: the disk looks thin after the seeing (a bulge-dominated or blurred disk less so;
  a very elongated elliptical a little);
* **spiral**: the arms are visible: their amplitude, their coherence (grand design against
  flocculent), the inclination (foreshortening), the seeing against the spacing of the arms,
  and their surface brightness against the sky noise.

The three evidences (each 0..1) go through a softmax of sharpness ``SHARPNESS``; then a
volunteer answers at random with a probability that grows with low surface brightness
(the galaxy is hard to see), mergers, irregulars and close neighbours (confusion). Each
galaxy gets 30–60 volunteers (Galaxy Zoo 2 had about 44 per galaxy) whose answers are a
multinomial draw. ``galaxy_zoo.assign_labels`` then applies the ingest's ≥ τ rule to the
fractions, so the kept subset is the one a real survey would keep.
"""
from __future__ import annotations

import numpy as np

from cosmotrain.data import population
from cosmotrain.data.population import ELLIPTICAL, IRREGULAR, LENTICULAR, MERGER, SPIRAL

SHARPNESS = 7.0                   # softmax sharpness of the three evidences
BASE_CONFUSION = 0.03             # share of random answers on the clearest galaxy
VOLUNTEERS = (30, 61)             # volunteers per galaxy: uniform in [30, 60]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def disk_visibility(p: dict) -> np.ndarray:
    """How well the disk shows above the sky (float64 [N], 0..1): its surface brightness at 1.5 h.

    An inclined disk is brighter in projection (1 / q); a faint, extended disk around a bright
    bulge is lost in the noise, and the galaxy then looks like its bulge.
    """
    lum_sb = 10 ** (-0.4 * (p["mu50"] - population.MU_REF)) * p["r50"] ** 2  # L / (2π R90²)
    disk_sb = (1 - p["bt"]) * lum_sb / (p["h"] ** 2 * p["q_disk"]) * np.exp(-1.5)
    return 1 - np.exp(-(disk_sb / sky_noise_per_seeing_disk(p) / 3.0) ** 2)


def apparent_axis_ratios(p: dict) -> tuple[np.ndarray, np.ndarray]:
    """(whole galaxy, disk alone) axis ratios (float64 [N]) from second moments after the seeing.

    Each component's second-moment size is its half-light radius (the bulge's R_e, 1.68 h
    for the disk), its minor axis that times its axis ratio; the PSF adds its variance to both.
    The disk counts as much as it is visible (``disk_visibility``).
    """
    psf2 = (p["fwhm"] / 2.355) ** 2
    sb2, sd2 = p["re_b"] ** 2, (1.68 * p["h"]) ** 2
    w = p["bt"] / np.maximum(p["bt"] + (1 - p["bt"]) * disk_visibility(p), 1e-9)
    major = w * sb2 + (1 - w) * sd2 + psf2
    minor = w * sb2 * p["q_b"] ** 2 + (1 - w) * sd2 * p["q_disk"] ** 2 + psf2
    return np.sqrt(minor / major), np.sqrt((sd2 * p["q_disk"] ** 2 + psf2) / (sd2 + psf2))


def sky_noise_per_seeing_disk(p: dict) -> np.ndarray:
    """Sky noise (float64 [N], display units of surface brightness) averaged over one seeing disk."""
    sigma_pixel = 10 ** (-0.4 * (population.SKY_NOISE_MU - population.MU_REF))
    seeing_area = np.pi * (p["fwhm_arcsec"] / 2) ** 2
    return sigma_pixel * population.SDSS_PIXEL / np.sqrt(seeing_area)


def arm_visibility(p: dict) -> tuple[np.ndarray, np.ndarray]:
    """How well a volunteer sees spiral arms: (a hint of them, clearly) (float64 [N] each, 0..1).

    At radius R (1.5 and 3 disk scale lengths) the arms are a wave of period
    2πR sin(pitch)/m across them, blurred by the seeing (a Gaussian PSF keeps
    exp(-3.56 (FWHM/period)²) of its contrast), of surface brightness ``arm_amp`` times the disk's,
    against the sky noise over a seeing disk. A hint needs them somewhere, faint or fragmented;
    seeing them clearly needs them strong, coherent, resolved and above the noise in the inner disk,
    and the disk not too inclined.
    """
    lum_sb = 10 ** (-0.4 * (p["mu50"] - population.MU_REF)) * p["r50"] ** 2  # L / (2π R90²)
    noise = sky_noise_per_seeing_disk(p)
    looks = {}
    for r in (1.5, 2.0, 3.0):
        period = 2 * np.pi * r * p["h"] * np.sin(p["pitch"]) / p["arms"]
        snr = p["arm_amp"] * (1 - p["bt"]) * lum_sb / (p["h"] ** 2 * p["q_disk"]) * np.exp(-r) / noise
        looks[r] = np.exp(-3.56 * (p["fwhm"] / period) ** 2), snr
    somewhere = np.maximum.reduce([np.clip(res / 0.3, 0, 1) * (1 - np.exp(-(snr / 2) ** 2))
                                   for res, snr in looks.values()])
    hint = np.clip(p["arm_amp"] / 0.2, 0, 1) * np.clip((p["cos_i"] - 0.12) / 0.3, 0, 1) * somewhere
    res, snr = looks[2.0]
    clear = np.clip(p["arm_amp"] / 0.5, 0, 1) * np.clip((p["cos_i"] - 0.17) / 0.3, 0, 1) ** 0.6 * \
        (0.6 + 0.4 * p["coherence"]) * np.clip(res / 0.5, 0, 1) * (1 - np.exp(-(snr / 4) ** 2))
    return hint, clear


def feature_visibility(p: dict) -> tuple[np.ndarray, np.ndarray]:
    """(bar, knots and lopsidedness) visibility (float64 [N] each, 0..1)."""
    bar_size = p["bar_len"] * p["h"]
    bar = p["bar"] * np.clip(p["bar_frac"] / 0.1, 0, 1) * np.exp(-(p["fwhm"] / bar_size) ** 2) * \
        np.clip((p["cos_i"] - 0.3) / 0.3, 0, 1)
    knot_light = sum(np.where(p["n_clumps"] > k, p[f"clump{k}_f"], 0.0) for k in range(population.MAX_CLUMPS))
    knot_size = np.median([p[f"clump{k}_s"] for k in range(population.MAX_CLUMPS)], axis=0) * p["h"]
    knots = np.clip(knot_light / 0.06, 0, 1) * np.exp(-(p["fwhm"] / (4 * knot_size)) ** 2)
    return bar, np.clip(knots + p["lopsided"], 0, 1)


def evidence(p: dict) -> np.ndarray:
    """Evidence for round, edge-on, spiral (float64 [N,3], each 0..1) from what is visible."""
    q_all, q_disk = apparent_axis_ratios(p)
    kind = p["kind"]
    hint, arms = arm_visibility(p)
    bar, clumpy = feature_visibility(p)
    disky = (kind == SPIRAL) | (kind == LENTICULAR) | (kind == MERGER) | (kind == IRREGULAR)
    thin = _sigmoid((0.33 - q_disk) / 0.045) * (1 - p["bt"]) ** 0.4 * disk_visibility(p)
    dust_lane = p["dust"] * np.clip((0.3 - p["cos_i"]) / 0.2, 0, 1)
    edge = np.where(disky, np.clip(thin * (1 + 0.3 * dust_lane), 0, 1),
                    0.5 * _sigmoid((0.36 - q_all) / 0.04) * (kind == ELLIPTICAL))
    smooth = (1 - hint) * (1 - 0.7 * bar) * (1 - 0.8 * clumpy)
    round_ = _sigmoid((q_all - 0.72) / 0.045) * smooth
    spiral = np.clip(arms + 0.25 * bar * (1 - edge), 0, 1)
    return np.stack([round_, edge, spiral], axis=1)


def confusion(p: dict) -> np.ndarray:
    """Share of random answers (float64 [N], 0..1): faint, merging, irregular or crowded galaxies."""
    faint = _sigmoid((p["mu50"] - 22.3) / 0.35)
    crowded = np.zeros(len(p["kind"]))
    for k in range(population.MAX_NEIGHBOURS):
        near = np.hypot(p[f"nb{k}_x"], p[f"nb{k}_y"]) < 1.1
        crowded = np.maximum(crowded, np.where((p["n_neighbours"] > k) & near, 0.06, 0.0))
    odd = np.where(p["kind"] == MERGER, 0.45, 0.0) + np.where(p["kind"] == IRREGULAR, 0.2, 0.0)
    return np.clip(BASE_CONFUSION + 0.5 * faint + crowded + odd, 0, 1)


def answer_probabilities(p: dict) -> np.ndarray:
    """Probability (float64 [N,3]) that one volunteer answers round, edge-on, spiral."""
    logits = SHARPNESS * evidence(p)
    clear = np.exp(logits - logits.max(axis=1, keepdims=True))
    clear /= clear.sum(axis=1, keepdims=True)
    c = confusion(p)[:, None]
    return (1 - c) * clear + c / 3.0


def vote_fractions(p: dict, rng: np.random.Generator) -> np.ndarray:
    """Simulated vote fractions (float64 [N,3]: round, edge-on, spiral; each row sums to 1).

    Float64, so that 27 of 30 votes is exactly 0.9 when the ≥ τ rule is applied.
    """
    volunteers = rng.integers(*VOLUNTEERS, len(p["kind"]))
    counts = rng.multinomial(volunteers, answer_probabilities(p))
    return counts / volunteers[:, None]
