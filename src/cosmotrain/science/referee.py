"""The referee: is a set of generated CMB patches statistically like held-out real patches?

Every test compares the samples with the reference split (patches of skies the generator
never saw) and returns its statistic, p-value, threshold and verdict. The null hypothesis
is "the samples are independent draws from the distribution the reference is drawn
from"; a test fails when its p-value is below ``ALPHA``. With ``ALPHA`` = 0.005 and eight
tests, two disjoint real sets pass each test ≥ 99.5 % and the whole referee ≥ 96 % of the
time (union bound; measured in tests/unit/test_referee.py).

How the variances are estimated (``Variance``). Features are per-patch rows
(``referee_features``); a test compares their means. The samples' mean varies as their
per-patch covariance / N (a generator's samples are independent). The reference's patches
are not: they come from a few skies, neighbours share large scales, and each sky has its
own realisation of the low multipoles. So the reference's mean gets, beside covariance / n,
the sky-level excess E / K_ref: E is the covariance of one sky's mean features beyond
covariance / (patches per sky), measured across the training and reference skies (never the
samples': a wrong set would inflate it and hide), and kept only in the directions where it
is larger than the scatter of a few skies' means could fake. A generator can also not be closer to the truth than the skies it
was trained on: unlabelled samples get E / K_train on top. A set of real samples labelled
by sky gets E / K_samples, like the reference. No test compares absolute
means (a sky's mean differs from the next by ~9 μK): means are removed per patch, and the
one-point test compares the spread of patch means, not their average.

The tests (``run``):

* ``band_powers``: χ² of the mean band powers (bins two fundamentals wide, up to the
  Nyquist ℓ) with their full covariance;
* ``rings``: the same per ring one fundamental wide (on the patch's Laplacian: sharper;
  each ring read with and without a window), the largest |z| (Bonferroni over both);
* ``scatter``: the per-bin patch-to-patch variance, log ratio samples/reference, two-sided:
  χ² over bins and the largest |z| (Bonferroni over both);
* ``one_point``: per-patch σ, skewness and excess kurtosis (mean over patches) and the
  spread of each of them and of the patch means: the largest |z| of seven;
* ``pixel_pdf``: χ² of the pooled PDF of (T − patch mean) / patch σ;
* ``minkowski``: χ² of V0, V1, V2 at −2σ … 2σ (patch σ) with their covariance;
* ``memorisation``: how many samples lie nearer a training patch (any of its 8 rotations
  and flips) than the reference's 1st-percentile nearest-neighbour distance; under the
  null that count is beta-binomial (exact, one-sided);
* ``diversity``: two-sample KS of the pixel correlations of disjoint pairs of samples
  against those of pairs of reference patches from different skies.

Pure NumPy/SciPy.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats as sps

from cosmotrain.science.referee_features import RING_READINGS, Moments, Probe

ALPHA = 0.005
MEMO_QUANTILE = 0.01
TESTS = ("band_powers", "rings", "scatter", "one_point", "pixel_pdf", "minkowski", "memorisation", "diversity")
ONE_POINT = ("mean", "sigma", "skewness", "excess_kurtosis")


@dataclasses.dataclass(frozen=True)
class Variance:
    """How the two sides' means scatter beyond independent patches: the sky-level excess covariance.

    ``between`` [F, F] is the covariance of one sky's mean features across the training and
    reference skies (``n_skies`` of them), ``within`` [F, F] what independent patches would
    give it (per-patch covariance / patches per sky). ``excess`` keeps, for the features of
    one test, only the directions in which ``between`` exceeds ``within`` by more than
    chance allows (the Marchenko–Pastur edge of K − 1 degrees of freedom): sky-level
    variance that is really there (patch means, patch σ), not the noise of a few skies.
    """

    between: np.ndarray
    within: np.ndarray
    n_skies: int
    n_train_skies: int

    @classmethod
    def of(cls, groups: list[Moments], reference: Moments, n_train_skies: int) -> "Variance":
        """From the skies of ``groups`` (training and reference; never the samples)."""
        means = np.concatenate([g.sky_means for g in groups if len(g.sky_n)])
        counts = np.concatenate([g.sky_n for g in groups if len(g.sky_n)])
        width = len(reference.total)
        if len(means) < 3:
            return cls(np.zeros((width, width)), reference.cov, len(means), n_train_skies)
        return cls(np.cov(means, rowvar=False), reference.cov / np.mean(counts), len(means), n_train_skies)

    def excess(self, cols: slice, gated: bool = True) -> np.ndarray:
        """The sky-level excess covariance [f, f] of one sky's mean over ``cols``.

        ``gated``: only directions beyond the Marchenko–Pastur edge (linear features: band
        powers, PDF, functionals); otherwise every direction where ``between`` exceeds
        ``within`` (squared deviations, whose sky-level part is real but modest: gating it
        away left the scatter test passing real sets only 97 % of the time).
        """
        within, between = self.within[cols, cols], self.between[cols, cols]
        if self.n_skies < 3:
            return np.zeros_like(within)
        values, vectors = np.linalg.eigh(within)
        keep = values > 1e-12 * values.max()
        root = vectors[:, keep] * np.sqrt(values[keep])          # within = root root^T
        inverse = vectors[:, keep] / np.sqrt(values[keep])
        lam, u = np.linalg.eigh(inverse.T @ between @ inverse)   # between in units of within
        edge = (1.0 + np.sqrt(keep.sum() / (self.n_skies - 1.0))) ** 2 if gated else 1.0
        extra = np.where(lam > edge, lam - 1.0, 0.0)
        return (root @ u) * extra @ (root @ u).T

    def split(self, s: Moments, r: Moments, cols: slice, gated: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Covariances [f, f] of the samples' mean and of the reference's mean over ``cols``."""
        excess = self.excess(cols, gated)
        reference = r.cov[cols, cols] / r.n + excess / max(len(r.sky_n), 1)
        skies = len(s.sky_n) if len(s.sky_n) else self.n_train_skies  # a generator inherits its training skies'
        return s.cov[cols, cols] / s.n + excess / max(skies, 1), reference


def chi2(d: np.ndarray, cov: np.ndarray) -> tuple[float, int, float]:
    """χ² of difference ``d`` [f] with covariance ``cov`` [f, f]: (χ², degrees of freedom, p-value).

    Computed in the correlation basis; directions with eigenvalues below 1e-9 of the
    largest are dropped (e.g. fractions that add up to 1).
    """
    sd = np.sqrt(np.maximum(np.diag(cov), 1e-300))
    corr = cov / np.outer(sd, sd)
    values, vectors = np.linalg.eigh(corr)
    keep = values > 1e-9 * values.max()
    u = vectors[:, keep].T @ (d / sd)
    stat = float(np.sum(u**2 / values[keep]))
    return stat, int(keep.sum()), float(sps.chi2.sf(stat, keep.sum()))


def max_z(z: np.ndarray) -> tuple[float, float]:
    """Largest |z| and its Bonferroni-corrected two-sided p-value."""
    worst = float(np.max(np.abs(z)))
    return worst, float(min(1.0, len(z) * 2.0 * sps.norm.sf(worst)))


def verdict(name: str, statistic: float, p: float, what: str, **detail) -> dict:
    """One test's entry in the report."""
    return {"test": name, "what": what, "statistic": float(statistic), "p_value": float(p), "threshold": ALPHA,
            "pass": bool(p >= ALPHA), **detail}


# ---------------------------------------------------------------- the tests

def band_powers(s: Moments, r: Moments, var: Variance, probe: Probe) -> dict:
    cols = probe.columns["bp"]
    vs, vr = var.split(s, r, cols)
    d = s.mean[cols] - r.mean[cols]
    stat, dof, p = chi2(d, vs + vr)
    return verdict("band_powers", stat, p, f"chi2 of the mean band powers in {dof} bins (full covariance)",
                   dof=dof, ratio=(s.mean[cols] / r.mean[cols]).tolist(), ratio_sigma=np.sqrt(np.diag(vs + vr)).tolist())


def rings(s: Moments, r: Moments, var: Variance, probe: Probe) -> dict:
    cols = probe.columns["ring"]
    vs, vr = var.split(s, r, cols)
    z = (s.mean[cols] - r.mean[cols]) / np.sqrt(np.diag(vs + vr))
    worst, p = max_z(z)
    n, at = len(probe.ring_k), int(np.argmax(np.abs(z)))
    return verdict("rings", worst, p, f"largest |z| of the mean power in {n} rings one fundamental wide, "
                   "read with and without a window", worst_ring_k=int(probe.ring_k[at % n]),
                   worst_reading=RING_READINGS[at // n],
                   **{f"z_{name}": z[i * n:(i + 1) * n].tolist() for i, name in enumerate(RING_READINGS)})


def _log_variance_ratio(s: Moments, r: Moments, var: Variance, raw: slice, sq: slice, centre: np.ndarray,
                        scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(var_S / var_R) of the features in ``raw`` from their squared deviations in ``sq``, and its covariance."""
    def variance(m: Moments) -> np.ndarray:
        return np.maximum(m.mean[sq] - ((m.mean[raw] - centre) / scale) ** 2, 1e-300)

    v_s, v_r = variance(s), variance(r)
    cov_s, cov_r = var.split(s, r, sq, gated=False)
    return np.log(v_s / v_r), cov_s / np.outer(v_s, v_s) + cov_r / np.outer(v_r, v_r)


def scatter(s: Moments, r: Moments, var: Variance, probe: Probe) -> dict:
    c = probe.columns
    ones = np.ones(c["bp"].stop - c["bp"].start)
    log_ratio, cov = _log_variance_ratio(s, r, var, c["bp"], c["bp2"], ones, ones)
    stat, dof, p_chi2 = chi2(log_ratio, cov)
    worst, p_z = max_z(log_ratio / np.sqrt(np.diag(cov)))
    p = min(1.0, 2.0 * min(p_chi2, p_z))
    sigma = 0.5 * np.sqrt(np.diag(cov)) * np.exp(0.5 * log_ratio)
    return verdict("scatter", worst, p, f"per-bin patch-to-patch scatter, two-sided: chi2 over {dof} bins "
                   "and the largest |z| of log(var_samples/var_reference)", chi2=stat, p_chi2=p_chi2, p_max_z=p_z,
                   ratio=np.exp(0.5 * log_ratio).tolist(), ratio_sigma=sigma.tolist())


def one_point(s: Moments, r: Moments, var: Variance, probe: Probe) -> dict:
    c = probe.columns
    one = slice(c["one"].start + 1, c["one"].stop)  # σ, skewness, kurtosis: their means
    vs, vr = var.split(s, r, one, gated=False)
    z_location = (s.mean[one] - r.mean[one]) / np.sqrt(np.diag(vs + vr))
    scale = np.array([probe.sigma, probe.sigma, 1.0, 1.0])
    log_ratio, cov = _log_variance_ratio(s, r, var, c["one"], c["one2"], probe.one_ref, scale)
    z = np.concatenate([z_location, log_ratio / np.sqrt(np.diag(cov))])
    worst, p = max_z(z)
    names = [f"{n} (average)" for n in ONE_POINT[1:]] + [f"{n} (spread)" for n in ONE_POINT]
    return verdict("one_point", worst, p, "per-patch σ, skewness, excess kurtosis (averages) and the spread of "
                   "those and of the patch means: the largest |z| of 7", z=dict(zip(names, z.tolist())),
                   samples=dict(zip(ONE_POINT, s.mean[c["one"]].tolist())),
                   reference=dict(zip(ONE_POINT, r.mean[c["one"]].tolist())))


def _chi2_of(name: str, cols: slice, what: str, s: Moments, r: Moments, var: Variance) -> dict:
    vs, vr = var.split(s, r, cols)
    stat, dof, p = chi2(s.mean[cols] - r.mean[cols], vs + vr)
    return verdict(name, stat, p, f"{what}: chi2 with {dof} degrees of freedom", dof=dof,
                   samples=s.mean[cols].tolist(), reference=r.mean[cols].tolist(),
                   sigma=np.sqrt(np.diag(vs + vr)).tolist())


def pixel_pdf(s: Moments, r: Moments, var: Variance, probe: Probe) -> dict:
    return _chi2_of("pixel_pdf", probe.columns["pdf"], "pooled PDF of T − patch mean", s, r, var)


def minkowski(s: Moments, r: Moments, var: Variance, probe: Probe) -> dict:
    return _chi2_of("minkowski", probe.columns["mf"], "V0, V1, V2 at -2σ … 2σ", s, r, var)


def memorisation(sample_distances_below: int, n_samples: int, reference_distances: np.ndarray) -> dict:
    """Too many samples nearer the training set than the reference's 1st percentile: beta-binomial p-value."""
    n_ref = len(reference_distances)
    j = max(1, int(round(MEMO_QUANTILE * n_ref)))
    k = int(sample_distances_below)
    p = float(sps.betabinom.sf(k - 1, n_samples, j, n_ref - j + 1)) if k > 0 else 1.0
    return verdict("memorisation", k / max(n_samples, 1), p, "fraction of samples nearer a training patch (8 "
                   f"rotations/flips) than the reference's {j}-th nearest of {n_ref}; expected "
                   f"{j / (n_ref + 1):.4f}", threshold_distance=float(memo_threshold(reference_distances)),
                   expected_fraction=j / (n_ref + 1))


def memo_threshold(reference_distances: np.ndarray) -> float:
    """The distance (μK) below which a sample counts as near a training patch: the reference's j-th smallest."""
    j = max(1, int(round(MEMO_QUANTILE * len(reference_distances))))
    return float(np.sort(reference_distances)[j - 1])


def diversity(sample_r: np.ndarray, reference_r: np.ndarray) -> dict:
    ks = sps.ks_2samp(sample_r, reference_r)
    return verdict("diversity", ks.statistic, ks.pvalue, "two-sample KS of pixel correlations of disjoint pairs "
                   f"({len(sample_r)} sample pairs, {len(reference_r)} reference pairs from different skies)",
                   rms_samples=float(np.sqrt(np.mean(sample_r**2))), rms_reference=float(np.sqrt(np.mean(reference_r**2))))


def run(s: Moments, r: Moments, train: Moments, probe: Probe, near: int, reference_distances: np.ndarray,
        sample_r: np.ndarray, reference_r: np.ndarray) -> dict:
    """Every test; ``{"pass": all passed, "tests": {name: verdict}, ...}``.

    ``s``, ``r``, ``train``: feature sums of samples, reference and training split (with
    per-sky sums); ``near``: how many samples lie below ``memo_threshold`` of the
    reference's nearest-neighbour distances ``reference_distances``; ``sample_r`` and
    ``reference_r``: pair correlations.
    """
    var = Variance.of([train, r], r, len(train.sky_n))  # never the samples' skies: a bad set would hide in them
    tests = {f.__name__: f(s, r, var, probe) for f in (band_powers, rings, scatter, one_point, pixel_pdf, minkowski)}
    tests["memorisation"] = memorisation(near, int(s.n), reference_distances)
    tests["diversity"] = diversity(sample_r, reference_r)
    return {"pass": all(t["pass"] for t in tests.values()), "alpha_per_test": ALPHA, "tests": tests,
            "failed": [name for name, t in tests.items() if not t["pass"]], "skies_for_variance": var.n_skies}
