"""The science monitors of one GAN run: the real patches they compare with, the calibration filter's fit.

Every ``monitor.every`` steps, ``RunMonitor.run`` fits G's calibration filter on patches of
G's own latents (``monitor.calibration_patches`` > 0; ``science.calibration``), makes the
monitors' N patches (each rank its share, the same N whatever the rank count), measures
them, adds the sums over ranks and scores them on rank 0 against real training patches
(``science.monitors``). The real side is built once per run: ``monitor_patches`` draws the
reference and a held-out pool, ``real_rings`` measures their Fourier ring powers for the
spectrum term and the filter.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cosmotrain import dist
from cosmotrain.data.reader import ShardSet
from cosmotrain.files import plain_json
from cosmotrain.models.generator import Transform
from cosmotrain.science import calibration, monitors, rings
from cosmotrain.science.monitors import MonitorConfig
from cosmotrain.train import spectrum_loss
from cosmotrain.train.gan_config import GanConfig
from cosmotrain.train.gan_step import GanTrainer

FIELDS = ("patches",)
POOL_SETS = 8  # the floors' held-out pool: up to 8 sets of N real patches


def real_patches(split: ShardSet, n: int, seed: int) -> np.ndarray:
    """``n`` training patches float32 [n, H, W] μK, each drawn at random (seeded), in random order.

    One by one, not in blocks of neighbours: neighbouring patches of a CMB set are cut from
    neighbouring skies and share their projection onto the map's pixels. On the tiny set the
    band power at ℓ ≈ 1430 varies 2.8 × more between blocks of 64 than independent patches
    would, and a reference read as 8 such blocks sat 4–5 σ from the other patches there: real
    patches scored 1.4 × the C_ℓ floor against it (1.06–1.10 against patches drawn one by one).
    """
    chosen = np.random.default_rng([seed, 4]).choice(split.n, size=n, replace=False)
    order = np.argsort(chosen)  # read in file order, place each patch at its drawn position
    runs = [(int(chosen[i]), int(chosen[i]) + 1) for i in order]
    return split.read_runs(runs, FIELDS, rows=order)["patches"]


class RunMonitor:
    """The science monitors of a run: fixed latents and the probe on every rank, the reference on rank 0."""

    def __init__(self, cfg: MonitorConfig, real: np.ndarray | None, attrs: dict, latent_dim: int,
                 target: np.ndarray | None = None):
        self.cfg, self.target = cfg, target
        z = np.random.default_rng([cfg.seed, 3]).standard_normal((cfg.generated, latent_dim)).astype(np.float32)
        self.latents = _mine(z)  # the same N patches whatever the rank count
        c = np.random.default_rng([cfg.seed, 5]).standard_normal((cfg.calibration_patches, latent_dim))
        self.calibration_latents = _mine(c.astype(np.float32))  # the filter's own, not the monitors'
        self.reference = dist.root_computes(lambda: monitors.build_reference(
            real[:cfg.reference], real[cfg.reference:], attrs["reso_arcmin"], attrs.get("lmax"), cfg), share=False)
        self.probe = dist.broadcast_object(self.reference.probe if self.reference is not None else None)

    def run(self, trainer: GanTrainer) -> dict:
        """Fit the calibration filter, generate, measure, add over ranks, score on rank 0; the result on every rank."""
        generate = trainer.generate
        if self.target is not None:
            generate.gains = calibration.fit(generate.network(self.calibration_latents), self.target,
                                             dist.allreduce_sum_array)
        local = self.probe.measure(generate(self.latents), keep_examples=True)
        total = monitors.combine(local, dist.allreduce_sum_array, dist.gather_object)
        result = dist.root_computes(lambda: {**monitors.score(self.reference, total),
                                             "examples_uK": plain_json(total.examples[:self.cfg.examples])})
        result["calibration_gains"] = None if generate.gains is None else [float(g) for g in generate.gains]
        return result


def monitor_patches(split: ShardSet, cfg: MonitorConfig) -> np.ndarray:
    """The real patches of the monitors: ``reference`` then a held-out pool (<= 8N), float32 μK.

    The KS floor is the mean distance of N-patch subsets of the pool, so it is only as good
    as the pool is typical. On the tiny set, 40 sets of N real patches outside the pool met
    both goals in 62 % of the trials with a pool of 2N and in 70 % with
    the other 4N training patches; the pixel KS of one set of N patches scatters widely
    (p10-p90 0.45-2.2 × its mean), so no pool makes that 100 %.
    """
    n_pool = min(split.n - cfg.reference, POOL_SETS * cfg.generated)
    return real_patches(split, cfg.reference + n_pool, cfg.seed)


class RealRings(NamedTuple):
    """The training patches' ring powers, measured once for the spectrum term and the calibration filter."""

    matrix: np.ndarray   # rings.ring_matrix: rings 0..top of the monitors' ℓ range
    powers: np.ndarray   # float64 [N, rings]: each real patch's ring powers, network units
    moments: np.ndarray  # float [N, 3]: each real patch's spectrum_loss.pixel_moments


def real_rings(cfg: GanConfig, real: np.ndarray | None, transform: Transform, attrs: dict) -> RealRings | None:
    """Rank 0's monitor patches' ``RealRings`` (every rank); None when neither term nor filter is on.

    Those patches and the transform (the checkpoint's on resume) are the same on every
    start of a run, so a resumed run aims at the same target.
    """
    if cfg.train.spectrum_weight <= 0 and cfg.monitor.calibration_patches <= 0:
        return None
    size = cfg.model.image_size
    matrix = rings.ring_matrix(size, rings.top_wavenumber(size, attrs["reso_arcmin"], attrs.get("lmax")))
    powers, moments = dist.root_computes(lambda: _spectrum_reference(transform.to_net(real), matrix))
    return RealRings(matrix, powers, moments)


def spectrum_term(cfg: GanConfig, real: RealRings | None) -> spectrum_loss.SpectrumMatch | None:
    """G's spectrum term (every rank), aimed at the ``real`` ring powers; None when λ = 0."""
    if cfg.train.spectrum_weight <= 0:
        return None
    return spectrum_loss.SpectrumMatch(real.powers, real.matrix, True, real.moments, cfg.train.variance_weight,
                                       cfg.train.scatter_weight)


def calibration_target(cfg: GanConfig, real: RealRings | None) -> np.ndarray | None:
    """The calibration filter's target (every rank): real mean ring powers, network units; None when off."""
    if cfg.monitor.calibration_patches <= 0:
        return None
    return real.powers.mean(axis=0)


def _spectrum_reference(real_net: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per-patch ring powers, per-patch pixel moments) of real patches in network units."""
    return rings.patch_ring_powers(real_net, matrix), spectrum_loss.pixel_moments(real_net).numpy()


def _mine(rows: np.ndarray) -> np.ndarray:
    """This rank's contiguous share of ``rows`` (``dist.share``)."""
    start, stop = dist.share(len(rows))
    return rows[start:stop]
