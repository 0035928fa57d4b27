"""Science monitors for a CMB generator: does it reproduce the training patches' statistics?

Every few training steps the generator makes ``N`` patches (shared out over the ranks);
each rank measures its own (``Probe.measure``): sums of binned C_ℓ, of Minkowski
functionals and of pixel values, a pixel histogram on fixed edges, and a fixed subsample of
pixels. The sums are added over ranks (``combine``) and rank 0 compares them with the
same statistics of real training patches (``Reference``, built once), in ``score``.

Every comparison is divided by its sample-variance floor: what the same comparison gives
for *real* patches. A perfect generator therefore scores about 1; a generator that is off
by much more than sample variance scores far above 1.

C_ℓ, per ℓ bin b. Let μ and v be the mean and per-patch variance of the band power. The
error of a generator is the expected squared deviation of the mean of ``M`` generated
patches from the mean of the ``n_ref`` reference patches, estimated from all ``N``::

    error²(b) = (μ_gen − μ_ref)² − v_gen/N + v_gen/M      (= bias² + v_gen/M + v_real/n_ref)

and its floor is the same quantity for ``M`` real patches disjoint from the reference::

    floor²(b) = v_real/M + v_real/n_ref

``cl_ratio = error / floor`` (→ 1 for a perfect generator, √(1 + bias²·M/v) when biased);
``cl_error_over_floor`` is its worst valid bin. Minkowski functionals are scored the same
way per threshold. The KS distance between generated and reference pixel values is
divided by the mean KS distance of real subsets of ``N`` patches from the same reference.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from cosmotrain.errors import UserError
from cosmotrain.files import plain_json
from cosmotrain.science import rings, spectra, stats

FUNCTIONALS = ("v0", "v1", "v2")


@dataclasses.dataclass(frozen=True)
class MonitorConfig:
    """The ``monitor`` section of a GAN config."""

    every: int = 250              # training steps between monitors (0: only at the end)
    generated: int = 1024         # N: patches generated per monitor, shared out over the ranks
    group_size: int = 32          # M: the floor is the scatter of the mean of M real patches (N/32: see below)
    reference: int = 1024         # real training patches whose mean statistics are the target
    pixels_per_patch: int = 64    # pixels per patch (fixed positions) in the KS samples
    ks_draws: int = 16            # real subsets of N patches averaged for the KS floor
    thresholds: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)  # MF thresholds, in real pixel σ
    histogram_bins: int = 60      # pixel histogram bins over ±histogram_sigmas real σ
    histogram_sigmas: float = 5.0
    min_modes: int = 8            # an ℓ bin with fewer Fourier modes is not scored
    cl_goal: float = 1.2          # score = max(cl_error_over_floor / cl_goal, ks_over_floor / ks_goal)
    ks_goal: float = 1.5
    collapse_fraction: float = 0.25  # warn when generated pixel variance < this × real
    examples: int = 8             # patches kept for the plots
    calibration_patches: int = 0  # > 0: before each monitor, fit G's calibration filter on this many patches of
                                  # its own (science.calibration); 0: score G as it is
    final_calibration_factor: int = 1  # the last monitor's filter, which the final checkpoint keeps, is fitted on
                                       # this many times calibration_patches: less noise of its own, once
    calibration_reading: str = "laplacian"  # what the filter matches from ring 2 on: "laplacian" (the referee's
                                            # rings reading, rings.prewhitened) or "hann" (the monitors' window)
    best_by: str = "referee"      # what picks checkpoints/best: "referee" (its verdict on the monitor's N patches
                                  # against the validation skies, data.referee_side.badness) or "monitors" (score)
    seed: int = 2024


def check_config(cfg: MonitorConfig, n_train: int, n_val: int, size: int) -> None:
    """Raise a ``UserError`` naming the key when the monitor cannot run on this data."""
    if cfg.every < 0 or cfg.generated < 2 or not 1 <= cfg.group_size <= cfg.generated:
        raise UserError(f"monitor.every must be >= 0, monitor.generated >= 2 and 1 <= monitor.group_size <= "
                        f"monitor.generated (got {cfg.every}, {cfg.generated}, {cfg.group_size})")
    if cfg.reference < 2 or cfg.pixels_per_patch < 1 or cfg.ks_draws < 1 or not cfg.thresholds:
        raise UserError("monitor.reference must be >= 2, monitor.pixels_per_patch and monitor.ks_draws >= 1, "
                        "monitor.thresholds not empty")
    if cfg.calibration_patches < 0:
        raise UserError(f"monitor.calibration_patches must be >= 0 (0 turns the calibration filter off), got "
                        f"{cfg.calibration_patches}")
    if cfg.final_calibration_factor < 1:
        raise UserError(f"monitor.final_calibration_factor must be >= 1 (1: the last filter is fitted like the "
                        f"others), got {cfg.final_calibration_factor}")
    if cfg.calibration_reading not in ("laplacian", "hann"):
        raise UserError(f"monitor.calibration_reading must be 'laplacian' or 'hann', got {cfg.calibration_reading!r}")
    if cfg.best_by not in ("referee", "monitors"):
        raise UserError(f"monitor.best_by must be 'referee' or 'monitors', got {cfg.best_by!r}")
    if cfg.best_by == "referee" and cfg.generated < 4:
        raise UserError(f"monitor.best_by: referee needs monitor.generated >= 4, got {cfg.generated}")
    if cfg.generated < size:
        raise UserError(f"monitor.generated {cfg.generated} is smaller than the {size} ranks; raise it")
    if n_val < 2:
        raise UserError(f"the monitors' validation split has {n_val} patch(es); make a dataset with more skies in "
                        f"splits.val")
    need = cfg.reference + cfg.generated
    if n_train < need:
        raise UserError(f"the monitors need monitor.reference + monitor.generated = {need} training patches, the "
                        f"dataset has {n_train}; lower them (e.g. --set monitor.reference={n_train // 2} "
                        f"--set monitor.generated={n_train // 2}) or make a larger dataset")


# ---------------------------------------------------------------- what every rank measures

@dataclasses.dataclass
class Sums:
    """Per-rank (or, after ``combine``, global) sums over patches; float64 unless noted.

    ``cl``/``cl2`` [nbins] band powers (μK²) and their squares; ``mf``/``mf2`` [3, T];
    ``hist`` [bins] pixel counts; ``pix``/``pix2`` [H, W] pixel values per position (μK);
    ``pixels`` float32 [n·pixels_per_patch] the KS subsample; ``examples`` [k, H, W] μK.
    """

    n: float
    cl: np.ndarray
    cl2: np.ndarray
    mf: np.ndarray
    mf2: np.ndarray
    hist: np.ndarray
    pix: np.ndarray
    pix2: np.ndarray
    pixels: np.ndarray
    examples: np.ndarray

    NUMERIC = ("cl", "cl2", "mf", "mf2", "hist", "pix", "pix2")


@dataclasses.dataclass(eq=False)
class Probe:
    """What to measure on patches, fixed for a run: the same for real and generated patches.

    Picklable (rank 0 builds it from real patches and sends it to every rank).
    """

    binning: spectra.Binning   # ℓ bins of [H, W] patches at their pixel size
    hist_edges: np.ndarray     # float64 [bins+1], μK
    thresholds: np.ndarray     # float64 [T], ν in units of the real pixel σ
    mean: float                # real pixel mean and σ (μK): u = (x - mean) / sigma for the MFs
    sigma: float
    positions: np.ndarray      # int64 [pixels_per_patch], flat pixel indices
    examples: int

    @property
    def shape(self) -> tuple:
        return self.binning.shape

    def band_powers(self, patches: np.ndarray) -> np.ndarray:
        """float64 [N, nbins] μK² of patches float [N, H, W] μK."""
        return spectra.band_powers(patches, self.binning)

    def functionals(self, patches: np.ndarray) -> np.ndarray:
        """Minkowski functionals per patch at the thresholds: float64 [N, 3, T].

        One normalisation for every patch (the real pixel mean and σ), so the functionals see
        amplitude errors too, as the thresholds are fixed temperatures.
        """
        return stats.minkowski_functionals(patches, self.thresholds, sigma=self.sigma, mean=self.mean)

    def measure(self, patches: np.ndarray, keep_examples: bool = False) -> Sums:
        """The sums of ``patches`` (float [n, H, W] μK) that ``combine`` adds over ranks."""
        x = np.asarray(patches, dtype=np.float64)
        if x.shape[1:] != tuple(self.shape):
            raise ValueError(f"patches of shape {x.shape[1:]}, the probe measures {tuple(self.shape)}")
        cl, mf = self.band_powers(x), self.functionals(x)
        examples = x[:self.examples] if keep_examples else np.zeros((0, *self.shape))
        return Sums(n=float(len(x)), cl=cl.sum(0), cl2=(cl**2).sum(0), mf=mf.sum(0), mf2=(mf**2).sum(0),
                    hist=stats.pixel_histogram(x, self.hist_edges).astype(np.float64),
                    pix=x.sum(0), pix2=(x**2).sum(0),
                    pixels=x.reshape(len(x), -1)[:, self.positions].astype(np.float32).ravel(),
                    examples=examples.astype(np.float32))


def make_probe(real: np.ndarray, reso_arcmin: float, lmax: float | None, cfg: MonitorConfig) -> Probe:
    """The probe for real patches float [n, H, W] μK of pixel side ``reso_arcmin``."""
    shape = tuple(real.shape[1:])
    sigma = float(np.std(real))
    mean = float(np.mean(real))
    rng = np.random.default_rng([cfg.seed, 1])
    n_pix = shape[0] * shape[1]
    positions = np.sort(rng.choice(n_pix, size=min(cfg.pixels_per_patch, n_pix), replace=False))
    binning = spectra.make_binning(shape, reso_arcmin, spectra.default_edges(shape, reso_arcmin, lmax))
    edges = stats.histogram_edges(sigma, cfg.histogram_sigmas, cfg.histogram_bins, mean)
    return Probe(binning=binning, hist_edges=edges,
                 thresholds=np.asarray(cfg.thresholds, dtype=np.float64), mean=mean, sigma=sigma,
                 positions=positions.astype(np.int64), examples=cfg.examples)


def combine(local: Sums, add: Callable[[np.ndarray], np.ndarray], gather: Callable[[Any], list | None]) -> Sums:
    """Every rank's sums added (collective: every rank calls it); pixel samples and examples gathered.

    ``add`` sums a float64 array over ranks and ``gather`` collects an object from every rank
    on rank 0 (None elsewhere): ``dist.allreduce_sum_array`` and ``dist.gather_object``. The
    numbers travel as one array; ranks other than 0 get empty pixel and example arrays.
    """
    packed = np.concatenate([[local.n]] + [getattr(local, f).ravel() for f in Sums.NUMERIC])
    total = add(packed.astype(np.float64))
    out, pos = {"n": float(total[0])}, 1
    for f in Sums.NUMERIC:
        size = getattr(local, f).size
        out[f] = total[pos:pos + size].reshape(getattr(local, f).shape)
        pos += size
    gathered = gather((local.pixels, local.examples))
    if gathered is None:
        return Sums(**out, pixels=np.zeros(0, np.float32), examples=local.examples[:0])
    pixels = np.concatenate([p for p, _ in gathered])
    examples = np.concatenate([e for _, e in gathered])
    return Sums(**out, pixels=pixels, examples=examples)


# ---------------------------------------------------------------- the real side (rank 0)

@dataclasses.dataclass
class Reference:
    """Statistics of real training patches, built once per run on rank 0.

    ``ref`` are the sums of the reference set (n_ref patches); ``pool`` the sums of the real
    patches held out from it (the floor's real sets). ``ks_floor`` is the mean KS distance of
    ``ks_draws`` random pool subsets of N patches from the reference pixels.
    """

    probe: Probe
    cfg: MonitorConfig
    ref: Sums
    pool: Sums
    ks_floor: float
    valid: np.ndarray

    @property
    def ell(self) -> np.ndarray:
        return self.probe.binning.ell


def build_reference(reference: np.ndarray, pool: np.ndarray, reso_arcmin: float, lmax: float | None,
                    cfg: MonitorConfig) -> Reference:
    """The probe (``make_probe`` of the reference) and the statistics of real patches float
    [n_ref, H, W] and [n_pool >= N, H, W], μK, of pixel side ``reso_arcmin``."""
    if len(pool) < cfg.generated:
        raise UserError(f"the KS floor needs {cfg.generated} held-out real patches, got {len(pool)}")
    probe = make_probe(reference, reso_arcmin, lmax, cfg)
    ref = probe.measure(reference, keep_examples=True)
    held = probe.measure(pool)
    ks_floor = _ks_floor(held.pixels.reshape(len(pool), -1), ref.pixels, cfg)
    n_modes = probe.binning.n_modes
    significant = ref.cl >= rings.SIGNIFICANT * np.max(ref.cl)  # like the spectrum term and the filter: 1e-6
    valid = (n_modes >= cfg.min_modes) & (ref.cl > 0) & np.isfinite(ref.cl) & significant
    if not valid.any():
        raise UserError(f"no ℓ bin of these {probe.shape[0]}x{probe.shape[1]} patches has >= "
                        f"monitor.min_modes={cfg.min_modes} modes and positive power; lower monitor.min_modes")
    return Reference(probe, cfg, ref, held, ks_floor, valid)


def _ks_floor(pool_pixels: np.ndarray, ref_pixels: np.ndarray, cfg: MonitorConfig) -> float:
    """Mean KS distance from the reference of ``ks_draws`` real subsets of N patches."""
    rng = np.random.default_rng([cfg.seed, 2])
    draws = []
    for _ in range(cfg.ks_draws):
        pick = rng.choice(len(pool_pixels), size=cfg.generated, replace=False)
        draws.append(stats.ks_distance(pool_pixels[pick].ravel(), ref_pixels))
    return float(np.mean(draws))


# ---------------------------------------------------------------- scoring (rank 0)

def _moments(total: np.ndarray, squares: np.ndarray, n: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased per-sample variance from sums over ``n`` samples."""
    mean = total / n
    var = np.maximum(squares / n - mean**2, 0.0) * n / max(n - 1.0, 1.0)
    return mean, var


def error_over_floor(gen_mean, gen_var, n_gen: float, ref_mean, real_var, n_ref: float, m: int) -> np.ndarray:
    """√(error² / floor²) per element, as in the module docstring (arrays broadcast).

    Two-sided in the scatter: the generator's per-patch variance enters as
    v_gen + (v_gen − v_real)²/v_gen, which is v_real for real patches (to first order in the
    noise of v_gen) and grows both when they scatter too much (→ 2 v_gen) and too little
    (→ v_real²/v_gen: a collapsed generator is no longer rewarded with a small error; the
    divisor is kept above 10⁻³ v_real, so a generator without any scatter scores finitely).
    """
    spread = gen_var + (gen_var - real_var) ** 2 / np.maximum(gen_var, 1e-3 * real_var + 1e-300)
    error2 = (gen_mean - ref_mean) ** 2 - gen_var / n_gen + spread / m
    floor2 = real_var / m + real_var / n_ref
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(np.maximum(error2, 0.0) / floor2)


def score(reference: Reference, gen: Sums) -> dict:
    """Compare generated sums (from ``combine``, on rank 0) with the reference.

    Returns JSON-able numbers: ``cl_error_over_floor`` (worst valid bin), ``ks_over_floor``,
    ``score`` (max of both over their goals; lower is better), per-bin arrays ``ell``,
    ``cl_ratio``, ``cl_rel_error``, ``valid``, Minkowski ratios, the pixel variance ratio,
    and what the plots need.
    """
    cfg, ref, pool = reference.cfg, reference.ref, reference.pool
    m = cfg.group_size
    real_cl_mean, real_cl_var = _moments(ref.cl + pool.cl, ref.cl2 + pool.cl2, ref.n + pool.n)
    ref_cl = ref.cl / ref.n
    gen_cl, gen_cl_var = _moments(gen.cl, gen.cl2, gen.n)
    cl_ratio = error_over_floor(gen_cl, gen_cl_var, gen.n, ref_cl, real_cl_var, ref.n, m)
    valid = reference.valid
    worst = float(np.max(cl_ratio[valid])) if np.isfinite(cl_ratio[valid]).all() else float("inf")
    ks = stats.ks_distance(gen.pixels, ref.pixels) if len(gen.pixels) else float("nan")
    ks_ratio = ks / reference.ks_floor if reference.ks_floor > 0 else float("inf")
    real_mf, real_mf_var = _moments(ref.mf + pool.mf, ref.mf2 + pool.mf2, ref.n + pool.n)
    gen_mf, gen_mf_var = _moments(gen.mf, gen.mf2, gen.n)
    mf_ratio = error_over_floor(gen_mf, gen_mf_var, gen.n, ref.mf / ref.n, real_mf_var, ref.n, m)
    variance_ratio = _position_variance(gen) / _position_variance(ref)
    ranked = np.where(np.isfinite(cl_ratio), cl_ratio, np.inf)[valid]
    result = {
        "score": _combined(worst, ks_ratio, cfg), "cl_error_over_floor": worst, "ks_over_floor": float(ks_ratio),
        "ks": float(ks), "ks_floor": reference.ks_floor, "variance_ratio": float(variance_ratio),
        "worst_bin_ell": float(reference.ell[valid][np.argmax(ranked)]),
        "ell": reference.ell, "valid": valid, "cl_ratio": cl_ratio, "cl_rel_error": gen_cl / ref_cl - 1.0,
        "cl_gen": gen_cl, "cl_gen_std": np.sqrt(gen_cl_var), "cl_real": ref_cl, "cl_real_std": np.sqrt(real_cl_var),
        "mf_ratio": mf_ratio, "mf_gen": gen_mf, "mf_gen_std": np.sqrt(gen_mf_var), "mf_real": real_mf,
        "mf_real_std": np.sqrt(real_mf_var), "thresholds_sigma": reference.probe.thresholds,
        "hist_edges_uK": reference.probe.hist_edges, "hist_gen": gen.hist / max(gen.n, 1.0),
        "hist_real": ref.hist / ref.n, "n_generated": int(gen.n), "group_size": m, "n_reference": int(ref.n),
    }
    for i, name in enumerate(FUNCTIONALS):
        result[f"mf_{name}_over_floor"] = float(np.max(mf_ratio[i])) if np.isfinite(mf_ratio[i]).all() else float("inf")
    return plain_json(result)


def collapse_message(result: dict, fraction: float) -> str | None:
    """A warning when the generated pixel variance across patches is below ``fraction`` × real."""
    if result["variance_ratio"] >= fraction:
        return None
    return (f"possible mode collapse: the generated pixel variance across patches is "
            f"{result['variance_ratio']:.2f} of the real one (warning below monitor.collapse_fraction={fraction})")


def _position_variance(sums: Sums) -> float:
    """Mean over pixel positions of the pixel variance across patches (μK²).

    A generator that has collapsed to a few outputs has a small variance across patches
    even when each patch looks like CMB.
    """
    _, var = _moments(sums.pix, sums.pix2, sums.n)
    return float(np.mean(var))


def _combined(cl_ratio: float, ks_ratio: float, cfg: MonitorConfig) -> float:
    value = max(cl_ratio / cfg.cl_goal, ks_ratio / cfg.ks_goal)
    return float(value) if np.isfinite(value) else float("inf")


def scalar_columns(nbins: int) -> list[str]:
    """History columns the monitors fill: scalars, then per-bin C_ℓ ratio and relative error."""
    base = ["score", "cl_error_over_floor", "ks_over_floor", "ks", "variance_ratio",
            *(f"mf_{n}_over_floor" for n in FUNCTIONALS)]
    return base + [f"cl_ratio_{b:02d}" for b in range(nbins)] + [f"cl_rel_error_{b:02d}" for b in range(nbins)]


def scalar_row(result: dict) -> dict:
    """One history row's monitor cells from a ``score`` result."""
    row = {k: result[k] for k in scalar_columns(0)}
    for b, (ratio, rel) in enumerate(zip(result["cl_ratio"], result["cl_rel_error"])):
        row[f"cl_ratio_{b:02d}"], row[f"cl_rel_error_{b:02d}"] = ratio, rel
    return row


def describe(result: dict) -> str:
    """One log line: the score and the per-bin C_ℓ ratios."""
    ratios = " ".join(f"{r:.2f}" if v else f"({r:.2f})" for r, v in zip(result["cl_ratio"], result["valid"]))
    return (f"C_ell error/floor worst {result['cl_error_over_floor']:.2f} (at ell {result['worst_bin_ell']:.0f}), "
            f"KS/floor {result['ks_over_floor']:.2f}, MF/floor {result['mf_v0_over_floor']:.2f}/"
            f"{result['mf_v1_over_floor']:.2f}/{result['mf_v2_over_floor']:.2f}, pixel variance ratio "
            f"{result['variance_ratio']:.2f}, score {result['score']:.2f} | per bin: {ratios}")
