"""The science monitors of one GAN run: the real patches they compare with, the calibration filter's fit.

Every ``monitor.every`` steps, ``RunMonitor.run`` fits G's calibration filter on patches of
G's own latents (``monitor.calibration_patches`` > 0, ``final_calibration_factor`` times as many
for the last monitor, whose filter the final checkpoint keeps; ``science.calibration``), makes the
monitors' N patches (each rank its share, the same N whatever the rank count), measures
them, adds the sums over ranks and scores them on rank 0 against the validation split:
skies training never sees (``science.monitors``); with ``monitor.best_by: referee`` rank 0 also
runs the referee (``data.referee_side``) on the N patches against those skies, and its
``referee_badness`` picks the best checkpoint. The real side is built once per run:
``real_patches`` draws the validation reference, ``monitor_patches`` training patches for
the μK transform, the floors' pool (real sets of other skies than the reference's, as a
perfect generator's would be) and ``real_rings``, the Fourier ring powers of the spectrum
term and the filter (training targets: never the validation or test skies).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cosmotrain import dist
from cosmotrain.data import referee_side
from cosmotrain.data.reader import ShardSet
from cosmotrain.files import plain_json
from cosmotrain.models.generator import Transform
from cosmotrain.science import calibration, monitors, rings
from cosmotrain.science.monitors import MonitorConfig
from cosmotrain.train import morphology_loss, spectrum_loss
from cosmotrain.train.gan_config import GanConfig
from cosmotrain.train.gan_step import GanTrainer

FIELDS = ("patches",)
POOL_SETS = 8  # the floors' held-out pool: up to 8 sets of N real patches


def real_patches(split: ShardSet, n: int, seed: int) -> np.ndarray:
    """``n`` patches of ``split``, float32 [n, H, W] μK, each drawn at random (seeded), in random order.

    One by one, not in blocks: neighbouring patches of a split come from one sky and share
    its large scales, so a block of neighbours is a less typical set than patches drawn
    across all its skies.
    """
    chosen = np.random.default_rng([seed, 4]).choice(split.n, size=n, replace=False)
    order = np.argsort(chosen)  # read in file order, place each patch at its drawn position
    runs = [(int(chosen[i]), int(chosen[i]) + 1) for i in order]
    return split.read_runs(runs, FIELDS, rows=order)["patches"]


class RunMonitor:
    """The science monitors of a run: fixed latents and the probe on every rank, the reference on rank 0."""

    def __init__(self, cfg: MonitorConfig, held_out: np.ndarray | None, pool: np.ndarray | None, attrs: dict,
                 latent_dim: int, target: tuple | None = None, judge: referee_side.Reference | None = None):
        self.cfg, self.target, self.judge = cfg, target, judge  # judge: rank 0's referee (validation skies)
        z = np.random.default_rng([cfg.seed, 3]).standard_normal((cfg.generated, latent_dim)).astype(np.float32)
        self.latents = _mine(z)  # the same N patches whatever the rank count
        c = np.random.default_rng([cfg.seed, 5]).standard_normal(
            (cfg.calibration_patches * cfg.final_calibration_factor, latent_dim)).astype(np.float32)
        self.fitted_on = {False: cfg.calibration_patches, True: len(c)}  # patches over all ranks; True: the last monitor
        self.calibration_latents = {last: _mine(c[:n]) for last, n in self.fitted_on.items()}  # not the monitors'
        self.reference = dist.root_computes(lambda: monitors.build_reference(
            held_out, pool, attrs["reso_arcmin"], attrs.get("lmax"), cfg), share=False)
        self.probe = dist.broadcast_object(self.reference.probe if self.reference is not None else None)

    def run(self, trainer: GanTrainer, last: bool = False) -> dict:
        """Fit the calibration filter (``last``: on the last monitor's latents), generate, measure, add over ranks,
        score on rank 0; the result on every rank."""
        generate = trainer.generate
        if self.target is not None:
            hann, whitened = self.target
            generate.gains = calibration.fit(generate.network(self.calibration_latents[last]), hann,
                                             dist.allreduce_sum_array, whitened)
        made = generate(self.latents)
        local = self.probe.measure(made, keep_examples=True)
        total = monitors.combine(local, dist.allreduce_sum_array, dist.gather_object)
        gathered = dist.gather_object(made) if self.cfg.best_by == "referee" else None
        result = dist.root_computes(lambda: {**monitors.score(self.reference, total), **self._referee(gathered),
                                             "examples_uK": plain_json(total.examples[:self.cfg.examples])})
        result["calibration_gains"] = None if generate.gains is None else [float(g) for g in generate.gains]
        result["calibration_patches"] = 0 if self.target is None else self.fitted_on[last]
        return result

    def _referee(self, gathered: list | None) -> dict:
        """Rank 0: the referee's verdict on the monitor's N patches (every rank's share) against the validation skies."""
        if gathered is None:
            return {}
        verdict = referee_side.judge(self.judge, np.concatenate(gathered))
        return {"referee_badness": referee_side.badness(verdict), "referee_failed": verdict["failed"],
                "referee_p": {name: t["p_value"] for name, t in verdict["tests"].items()}}


def referee_reference(cfg: GanConfig):
    """Rank 0's referee against the validation skies when it picks the best checkpoint (None elsewhere or off)."""
    if cfg.monitor.best_by != "referee":
        return None
    return dist.root_computes(referee_side.build, cfg.data.path, cfg.data.val_split, share=False)


def monitor_patches(split: ShardSet, cfg: MonitorConfig) -> np.ndarray:
    """Training patches for the μK transform, the ring targets and the floors' pool: ``reference`` + <= 8N, float32 μK.

    The floors are the distances from the validation reference of N-patch subsets of these
    (skies other than the reference's, like a generator's samples).
    """
    n_pool = min(split.n - cfg.reference, POOL_SETS * cfg.generated)
    return real_patches(split, cfg.reference + n_pool, cfg.seed)


class RealRings(NamedTuple):
    """The training patches' ring powers, measured once for the spectrum term and the calibration filter."""

    matrix: np.ndarray   # rings.ring_matrix: rings 0..top of the monitors' ℓ range
    powers: np.ndarray   # float64 [N, rings]: each real patch's ring powers, network units
    moments: np.ndarray  # float [N, 3]: each real patch's spectrum_loss.pixel_moments
    term_matrix: np.ndarray  # rings.sector_matrix of train.spectrum_sectors: the spectrum term's columns
    term_powers: np.ndarray  # float64 [N, columns]: each real patch's powers in them (``powers`` for 1 sector)
    whitened: np.ndarray | None  # float64 [N, columns]: their prewhitened powers (train.spectrum_prewhiten)
    periodic: np.ndarray | None  # float64 [N, columns]: their periodic Laplacian's powers (train.spectrum_periodic)
    ring_whitened: np.ndarray | None  # float64 [rings]: mean prewhitened ring powers (the filter's Laplacian reading)


def real_rings(cfg: GanConfig, real: np.ndarray | None, transform: Transform, attrs: dict) -> RealRings | None:
    """Rank 0's monitor patches' ``RealRings`` (every rank); None when neither term nor filter is on.

    Those patches and the transform (the checkpoint's on resume) are the same on every
    start of a run, so a resumed run aims at the same target.
    """
    if cfg.train.spectrum_weight <= 0 and cfg.monitor.calibration_patches <= 0:
        return None
    size = cfg.model.image_size
    top = rings.top_wavenumber(size, attrs["reso_arcmin"], attrs.get("lmax"))
    matrix = rings.ring_matrix(size, top)
    columns = rings.sector_matrix(size, top, cfg.train.spectrum_sectors)
    readings = (cfg.train.spectrum_prewhiten, cfg.train.spectrum_periodic)
    laplacian = cfg.monitor.calibration_patches > 0 and cfg.monitor.calibration_reading == "laplacian"
    powers, moments, term, whitened, periodic, ring_whitened = dist.root_computes(
        lambda: _spectrum_reference(transform.to_net(real), matrix, columns, readings, laplacian))
    return RealRings(matrix, powers, moments, columns, term, whitened, periodic, ring_whitened)


def spectrum_term(cfg: GanConfig, real: RealRings | None) -> spectrum_loss.SpectrumMatch | None:
    """G's spectrum term (every rank), aimed at the ``real`` ring powers; None when λ = 0."""
    if cfg.train.spectrum_weight <= 0:
        return None
    train = cfg.train
    return spectrum_loss.SpectrumMatch(real.term_powers, real.term_matrix, True, real.moments, train.variance_weight,
                                       train.scatter_weight, train.spectrum_floor, real.whitened, real.periodic,
                                       train.spectrum_periodic_weight)


def morphology_term(cfg: GanConfig, real: np.ndarray | None) -> morphology_loss.MorphologyMatch | None:
    """G's morphology term (every rank), aimed at rank 0's ``real`` training patches; None when μ = 0."""
    if cfg.train.morphology_weight <= 0:
        return None
    return morphology_loss.MorphologyMatch(*dist.root_computes(morphology_loss.reference, real))


def calibration_target(cfg: GanConfig, real: RealRings | None) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The calibration filter's target (every rank): real mean ring powers, network units, and their mean
    prewhitened ones (None with ``monitor.calibration_reading: hann``); None when the filter is off."""
    if cfg.monitor.calibration_patches <= 0:
        return None
    return real.powers.mean(axis=0), real.ring_whitened


def _spectrum_reference(real_net: np.ndarray, matrix: np.ndarray, columns: np.ndarray, readings: tuple[bool, bool],
                        laplacian: bool) -> tuple:
    """(ring powers, pixel moments, powers in the term's ``columns``, and in its prewhitened and periodic
    ``readings`` or None) of each real patch, network units, and (``laplacian``) the mean prewhitened ring
    powers or None."""
    powers = rings.patch_ring_powers(real_net, matrix)
    term = powers if columns.shape == matrix.shape else rings.patch_ring_powers(real_net, columns)
    whiten, edges = readings
    whitened = rings.patch_ring_powers(real_net, columns, prewhiten=True) if whiten else None
    periodic = rings.patch_ring_powers(real_net, columns, periodic=True) if edges else None
    ring_whitened = rings.patch_ring_powers(real_net, matrix, prewhiten=True).mean(axis=0) if laplacian else None
    return powers, spectrum_loss.pixel_moments(real_net).numpy(), term, whitened, periodic, ring_whitened


def _mine(rows: np.ndarray) -> np.ndarray:
    """This rank's contiguous share of ``rows`` (``dist.share``)."""
    start, stop = dist.share(len(rows))
    return rows[start:stop]
