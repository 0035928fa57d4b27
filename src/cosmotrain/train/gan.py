"""Data-parallel DCGAN training on CMB patches, with science monitors; ``load_generator``.

The losses are the tutorial's (Tutorial 3)::

    J_D = -(1/N) Σ_i log D(x_i) + log(1 - D(G(z_i)))      (D learns, G fixed)
    J_G = -(1/N) Σ_i log D(G(z_i))                        (G learns, D fixed; non-saturating)

computed from D's logits with a numerically stable sigmoid cross-entropy; optional one-sided
label smoothing (real label 1 - s) and label flipping (each sample's D label swapped with
probability p). With ``train.spectrum_weight`` λ > 0, G minimises J_G + λ·S, S being its
batch's power-spectrum mismatch with the training patches (``train.spectrum_loss``).
Each step updates D on a real batch and a fresh fake batch, then G on another fresh fake
batch.

Distribution (Horovod, through ``cosmotrain.dist``): every rank reads its own part of each
epoch and draws its own latent vectors, keyed by (seed, rank, step); each network has its
own ``distributed_tape`` with a distinct name (two tapes with one name crash, Horovod #784),
so its gradients are averaged over ranks before its optimizer applies them. After the first
step both networks and both optimizers are broadcast from rank 0, and after every step the
BatchNorm moving statistics are averaged, so all ranks hold the same state.

Data scaling: patches arrive in μK and enter the networks as ``(x - offset) / scale`` with
``offset`` the training pixel mean and ``scale`` = ``data.scale_sigmas`` × the training pixel
σ; the transform is stored in every checkpoint, so ``load_generator`` returns μK.

With ``train.ema`` > 0 the trainer also keeps an exponential moving average of G's weights
(updated after every step, identical on all ranks); the monitors, the best checkpoint and
``load_generator`` then use that average, which fluctuates much less than G itself.
With ``monitor.calibration_patches`` > 0, each monitor first fits G's calibration filter
(``train.calibration``: one gain per Fourier ring) on patches of G's own latents, scores G
through it and stores its gains in the checkpoints that follow; ``load_generator`` applies them.

Exact resume: latent vectors and label flips are stateless random draws keyed by the global
step, the data order by (seed, epoch, rank, batch), and a checkpoint holds both networks,
both optimizers, the step and every rank's partial log sums. The best checkpoint
(``checkpoints/best``) is the one with the lowest monitor score (``science.monitors``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from cosmotrain import config, dist, logs
from cosmotrain.config import ConfigError
from cosmotrain.data import feed, shards
from cosmotrain.errors import UserError
from cosmotrain.models.dcgan import ModelConfig, build_discriminator, build_generator, moving_statistics
from cosmotrain.science import monitors
from cosmotrain.science.monitors import MonitorConfig
from cosmotrain.train import calibration, spectrum_loss
from cosmotrain.train.checkpoint import Checkpointer, CheckpointError, TrainState, read_state
from cosmotrain.train.common import (Board, History, LearningRate, Meters, OptimizerConfig, RequeueSignal,
                                     agree_in_step, claim_run_dir, freeze_garbage, make_optimizer, nonfinite_error,
                                     resolve_run_config, rng_key, seed_everything, stateless_seed, weights_digest)

log = logs.get("train")

FIELDS = ("patches",)
LOSS_COLUMNS = ("step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "g_spectrum", "lr", "steps_per_s", "seconds")
METERS = ("d_loss", "g_loss", "g_spectrum", "d_real", "d_fake", "count")
REQUIRED_ATTRS = ("reso_arcmin",)
GENERATE_BATCH = 256
AVERAGE = "generator_average"  # checkpoint name of the moving average of G's weights


# ---------------------------------------------------------------- configuration

def _adam() -> OptimizerConfig:
    """Radford et al.'s optimizer: Adam(2e-4, β1 = 0.5), no batch scaling, no warmup."""
    return OptimizerConfig(name="adam", base_lr=2e-4, beta_1=0.5, scaling="none", warmup_epochs=0.0)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section. ``batch_size`` is per rank; one step uses it x ranks real patches."""

    steps: int = 4000
    batch_size: int = 64
    seed: int = 1234
    label_smoothing: float = 0.0   # D's label for real patches is 1 - label_smoothing
    label_flip: float = 0.0        # probability that a sample's D label is swapped
    augment: bool = True           # random rotations/flips (D4) of real patches: CMB is isotropic
    ema: float = 0.0               # > 0: monitors, best checkpoint and sampling use an exponential moving
                                   # average of G's weights with this decay (0: G itself)
    spectrum_weight: float = 0.0   # λ > 0: G's loss adds λ x the batch's power-spectrum mismatch with the
                                   # training set (train.spectrum_loss); 0: the seed's plain J_G
    variance_weight: float = 0.0   # w > 0: that mismatch also counts the patches' mean, squared mean and inner
                                   # variance, w x as much as a ring of the same scatter; needs spectrum_weight > 0
    scatter_weight: float = 0.0    # c > 0: that mismatch also counts how far each ring's power scatters between
                                   # the batch's patches from the real scatter; needs spectrum_weight > 0
    log_every: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    deterministic: bool = True


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The ``data`` section: the CMB dataset (``--data`` sets it) and the μK → network map."""

    path: str = ""
    train_split: str = "train"
    scale_sigmas: float = 5.0      # network unit = scale_sigmas x the training pixel σ (tanh: ±5σ)


@dataclasses.dataclass(frozen=True)
class GanConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    g_optimizer: OptimizerConfig = dataclasses.field(default_factory=_adam)
    d_optimizer: OptimizerConfig = dataclasses.field(default_factory=_adam)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    monitor: MonitorConfig = dataclasses.field(default_factory=MonitorConfig)


def resolve_config(config_path: str | None, overrides: list[str], data: str | None, run: str | Path,
                   resume: bool) -> GanConfig:
    """The config of this run: ``--config`` (or, on resume, the run's own), overrides, ``--data``."""
    cfg = resolve_run_config(GanConfig, config_path, overrides, data, run, resume, "cosmotrain data cmb")
    _check(cfg)
    return cfg


def _check(cfg: GanConfig) -> None:
    t = cfg.train
    if t.steps < 1 or t.batch_size < 1 or t.log_every < 1 or t.checkpoint_every < 1 or t.keep_checkpoints < 1:
        raise ConfigError("train.steps, batch_size, log_every, checkpoint_every and keep_checkpoints must be >= 1")
    if not (0.0 <= t.label_smoothing < 0.5 and 0.0 <= t.label_flip < 0.5):
        raise ConfigError(f"train.label_smoothing and train.label_flip must be in [0, 0.5) "
                          f"(got {t.label_smoothing}, {t.label_flip})")
    if not t.spectrum_weight >= 0:
        raise ConfigError(f"train.spectrum_weight must be >= 0 (0 turns the spectrum term off), got {t.spectrum_weight}")
    for key in ("variance_weight", "scatter_weight"):
        weight = getattr(t, key)
        if not weight >= 0 or (weight > 0 and t.spectrum_weight == 0):
            raise ConfigError(f"train.{key} must be >= 0 and needs train.spectrum_weight > 0 (it is a part "
                              f"of the spectrum term), got {weight} with spectrum_weight {t.spectrum_weight}")
    if cfg.data.scale_sigmas <= 0:
        raise ConfigError(f"data.scale_sigmas must be > 0, got {cfg.data.scale_sigmas}")


# ---------------------------------------------------------------- data

@dataclasses.dataclass
class TrainData:
    """The opened training split and what training needs to know about it."""

    train: shards.ShardSet
    attrs: dict
    steps_per_epoch: int


def open_data(cfg: GanConfig) -> TrainData:
    """Open and check the CMB training split against the model, before any work."""
    ctx = dist.context()
    train = shards.ShardSet(cfg.data.path, cfg.data.train_split, kind="cmb")
    shape = train.sample_shape("patches")
    size = cfg.model.image_size
    if shape != (size, size):
        raise UserError(f"{cfg.data.path} holds {shape[0]}x{shape[1]} patches but model.image_size is {size}; "
                        f"pass --set model.image_size={shape[0]} or use a dataset of {size}x{size} patches")
    attrs = dict(train.attrs)
    missing = [a for a in REQUIRED_ATTRS if not isinstance(attrs.get(a), (int, float)) or attrs[a] <= 0]
    if missing:
        raise UserError(f"{cfg.data.path} lacks a positive '{missing[0]}' attribute (pixel size in arcmin) needed "
                        f"for the power spectrum; regenerate it with 'cosmotrain data cmb'")
    where = f"{cfg.data.path} ({train.split} split)"
    per_rank = shards.per_rank_count(train.n, ctx.size, where)
    steps = shards.steps_per_epoch(per_rank, cfg.train.batch_size, where)
    monitors.check_config(cfg.monitor, train.n, ctx.size)
    log.info("data: %d training patches of %dx%d at %.3g'/pixel; %d steps per epoch", train.n, size, size,
             attrs["reso_arcmin"], steps)
    return TrainData(train, attrs, steps)


def real_patches(split: shards.ShardSet, n: int, seed: int) -> np.ndarray:
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


class Transform(NamedTuple):
    """μK ↔ network units: ``net = (uK - offset_uK) / scale_uK``."""

    offset_uK: float
    scale_uK: float

    @classmethod
    def fit(cls, patches: np.ndarray, sigmas: float) -> "Transform":
        """From training patches float [N, H, W] μK: offset = mean, scale = ``sigmas`` x σ."""
        x = np.asarray(patches, dtype=np.float64)
        return cls(float(x.mean()), float(sigmas * x.std()))

    def to_net(self, x):
        return (x - self.offset_uK) / self.scale_uK

    def to_uK(self, y):
        return y * self.scale_uK + self.offset_uK


# ---------------------------------------------------------------- the networks and their steps

def _bce(labels, logits):
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


class GanTrainer:
    """Both networks, both optimizers and the compiled step of one rank; no files, no data.

    ``train_step(real float32 [B,H,W] μK, step int64, stop bool)`` does one data-parallel
    update of D then G and returns (stop anywhere, NaN anywhere). ``spectrum`` is G's
    spectrum term (``spectrum_term``), needed when ``train.spectrum_weight`` > 0.
    """

    def __init__(self, cfg: GanConfig, transform: Transform, steps_per_epoch: int,
                 spectrum: spectrum_loss.SpectrumMatch | None = None):
        ctx = dist.context()
        self.cfg, self.transform = cfg, transform
        self.spectrum = spectrum if cfg.train.spectrum_weight > 0 else None
        if cfg.train.spectrum_weight > 0 and spectrum is None:
            raise ValueError("train.spectrum_weight > 0 needs the spectrum term (gan.spectrum_term)")
        self.generator = build_generator(cfg.model)
        self.discriminator = build_discriminator(cfg.model)
        epochs = -(-cfg.train.steps // steps_per_epoch)
        global_batch = cfg.train.batch_size * ctx.size
        self.g_schedule = LearningRate(cfg.g_optimizer, global_batch, steps_per_epoch, epochs)
        self.d_schedule = LearningRate(cfg.d_optimizer, global_batch, steps_per_epoch, epochs)
        self.g_optimizer = make_optimizer(cfg.g_optimizer, self.g_schedule)
        self.d_optimizer = make_optimizer(cfg.d_optimizer, self.d_schedule)
        # Slots exist before restore and broadcast.
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.keys = [rng_key(cfg.train.seed, ctx.rank, stream) for stream in (1, 2, 3)]
        self.meters = Meters(METERS)
        self.synced = False
        self._statistics = moving_statistics(self.generator) + moving_statistics(self.discriminator)
        self._average_statistics = ctx.size > 1
        self.average = self._build_average() if cfg.train.ema > 0 else None
        self.train_step = tf.function(self._train_step)
        self.generate = TrainedGenerator(self.average or self.generator, transform, checkpoint="", info={})

    def _build_average(self):
        """A second generator that will hold the moving average of G's weights (starts equal to G)."""
        average = build_generator(self.cfg.model)
        average.set_weights(self.generator.get_weights())
        return average

    def _labels(self, batch, step):
        """D's targets for a real and a fake batch: smoothing, then random flips. float32 [B, 1] each."""
        t = self.cfg.train
        real = tf.fill([batch, 1], 1.0 - t.label_smoothing)
        fake = tf.zeros([batch, 1])
        if t.label_flip > 0:
            u = tf.random.stateless_uniform([2, batch, 1], stateless_seed(self.keys[2], step))
            real = tf.where(u[0] < t.label_flip, 0.0, real)
            fake = tf.where(u[1] < t.label_flip, 1.0 - t.label_smoothing, fake)
        return real, fake

    def _train_step(self, real_uK, step, stop):
        G, D = self.generator, self.discriminator
        batch = tf.shape(real_uK)[0]
        x = tf.cast(self.transform.to_net(real_uK), tf.float32)
        latent = [batch, self.cfg.model.latent_dim]
        # Discriminator step, J_D: real patches labelled 1, fresh fakes labelled 0; G is fixed.
        real_label, fake_label = self._labels(batch, step)
        z = tf.random.stateless_normal(latent, stateless_seed(self.keys[0], step))
        with tf.GradientTape() as tape:
            real_logit = D(x, training=True)
            fake_logit = D(G(z, training=True), training=True)
            d_loss = _bce(real_label, real_logit) + _bce(fake_label, fake_logit)
        # Horovod averages D's gradients over ranks; its own name keeps its tensors apart from G's.
        tape = dist.distributed_tape(tape, "discriminator")
        grads = tape.gradient(d_loss, D.trainable_variables)
        self.d_optimizer.apply_gradients(zip(grads, D.trainable_variables))
        # Generator step, non-saturating J_G = -mean log D(G(z)) on new fakes; D is fixed.
        z = tf.random.stateless_normal(latent, stateless_seed(self.keys[1], step))
        with tf.GradientTape() as tape:
            fake = G(z, training=True)
            g_logit = D(fake, training=True)
            g_loss = _bce(tf.ones_like(g_logit), g_logit)
            g_spectrum = self.spectrum(fake) if self.spectrum is not None else tf.constant(0.0)
            g_objective = g_loss + self.cfg.train.spectrum_weight * g_spectrum
        tape = dist.distributed_tape(tape, "generator")
        grads = tape.gradient(g_objective, G.trainable_variables)
        self.g_optimizer.apply_gradients(zip(grads, G.trainable_variables))
        if self._average_statistics:
            self._average_batchnorm_statistics()
        if self.average is not None:
            self._update_average(step)
        stop_any, nonfinite_any = agree_in_step(stop, d_loss + g_loss, "gan_flags")
        self.meters.add(d_loss, g_loss, g_spectrum, tf.reduce_mean(tf.sigmoid(real_logit)),
                        tf.reduce_mean(tf.sigmoid(fake_logit)), 1)
        return stop_any, nonfinite_any

    def _average_batchnorm_statistics(self) -> None:
        """Keep BatchNorm's moving means/variances equal on all ranks (each saw its own batches)."""
        for i, var in enumerate(self._statistics):
            var.assign(dist.allreduce_mean(tf.convert_to_tensor(var), name=f"gan_stats_{i}"))

    def _update_average(self, step) -> None:
        """average ← d·average + (1 − d)·G for every variable (BatchNorm statistics too).

        The decay ramps up as (1 + step) / (10 + step) to ``train.ema``, so the average
        forgets the random initial weights quickly. Every rank holds the same G, hence the
        same average.
        """
        s = tf.cast(step, tf.float32)
        decay = tf.minimum(tf.constant(self.cfg.train.ema, tf.float32), (1.0 + s) / (10.0 + s))
        for average, current in zip(self.average.variables, self.generator.variables):
            average.assign(decay * average + (1.0 - decay) * current)

    def after_first_step(self) -> None:
        """Make every rank continue from rank 0's state.

        After the first step, not before it: Adam's moments exist and have their first
        values only then, and they are broadcast too. All ranks built the same initial
        weights from the same seed, so the first step already started from one state.
        """
        if not self.synced:
            dist.broadcast_variables(self.variables())
            self.synced = True

    def variables(self) -> list:
        """Every variable of the training state, in a fixed order."""
        average = self.average.variables if self.average is not None else []
        return (self.generator.variables + self.discriminator.variables + average
                + list(self.g_optimizer.variables) + list(self.d_optimizer.variables))


# ---------------------------------------------------------------- monitors of one run

class RunMonitor:
    """The science monitors of a run: fixed latents and the probe on every rank, the reference on rank 0."""

    def __init__(self, cfg: MonitorConfig, real: np.ndarray | None, attrs: dict, latent_dim: int,
                 target: np.ndarray | None = None):
        ctx = dist.context()
        self.cfg, self.target = cfg, target
        z = np.random.default_rng([cfg.seed, 3]).standard_normal((cfg.generated, latent_dim)).astype(np.float32)
        self.latents = z[ctx.rank::ctx.size]  # the same N patches whatever the rank count
        c = np.random.default_rng([cfg.seed, 5]).standard_normal((cfg.calibration_patches, latent_dim))
        self.calibration_latents = c.astype(np.float32)[ctx.rank::ctx.size]  # the filter's own, not the monitors'
        self.reference = None
        if ctx.is_root:
            self.reference = monitors.build_reference(real[:cfg.reference], real[cfg.reference:],
                                                      attrs["reso_arcmin"], attrs.get("lmax"), cfg)
        self.probe = dist.broadcast_object(self.reference.probe if ctx.is_root else None)

    def run(self, trainer: GanTrainer) -> dict:
        """Fit the calibration filter, generate, measure, add over ranks, score on rank 0; the result on every rank."""
        generate = trainer.generate
        if self.target is not None:
            generate.gains = calibration.fit(generate.network(self.calibration_latents), self.target,
                                             dist.allreduce_sum_array)
        local = self.probe.measure(generate(self.latents), keep_examples=True)
        total = monitors.combine(local)
        result = dist.on_root(monitors.score, self.reference, total)
        if result is not None:
            result["examples_uK"] = monitors.jsonable(total.examples[:self.cfg.examples])
        result = dist.broadcast_object(result)
        result["calibration_gains"] = None if generate.gains is None else [float(g) for g in generate.gains]
        return result


POOL_SETS = 8  # the floors' held-out pool: up to 8 sets of N real patches


def monitor_patches(split: shards.ShardSet, cfg: MonitorConfig) -> np.ndarray:
    """The real patches of the monitors: ``reference`` then a held-out pool (<= 8N), float32 μK.

    The KS floor is the mean distance of N-patch subsets of the pool, so it is only as good
    as the pool is typical. On the tiny set, 40 sets of N real patches outside the pool met
    both goals in 62 % of the trials with a pool of 2N (before 2026-11-26) and in 70 % with
    the other 4N training patches; the pixel KS of one set of N patches scatters widely
    (p10-p90 0.45-2.2 × its mean), so no pool makes that 100 %.
    """
    n_pool = min(split.n - cfg.reference, POOL_SETS * cfg.generated)
    return real_patches(split, cfg.reference + n_pool, cfg.seed)


# ---------------------------------------------------------------- the run

def train(cfg: GanConfig, run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> int:
    """Train (or, with ``resume``, continue) the GAN run in ``run_dir``; returns the exit code.

    0 when the run is complete, ``dist.EXIT_REQUEUE`` when it stopped on SIGUSR1 after
    checkpointing. Bad input raises ``UserError`` before any training.
    """
    ctx = dist.context()
    data = open_data(cfg)
    run = claim_run_dir(run_dir, resume, overwrite)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    real = dist.on_root(monitor_patches, data.train, cfg.monitor)
    fitted = dist.on_root(lambda: Transform.fit(real[:cfg.monitor.reference], cfg.data.scale_sigmas))
    state, transform, path = _start(cfg, run, data, Transform(*dist.broadcast_object(fitted)), resume)
    rings = real_rings(cfg, real, transform, data.attrs)
    monitor = RunMonitor(cfg.monitor, real, data.attrs, cfg.model.latent_dim, calibration_target(cfg, rings))
    trainer = GanTrainer(cfg, transform, data.steps_per_epoch, spectrum_term(cfg, rings))
    ckpt = Checkpointer(run / "checkpoints", _objects(trainer), _signature(cfg), keep=cfg.train.keep_checkpoints)
    if path is not None:
        _restore(ckpt, path, state, trainer)
    log.info("%d rank(s) (%s, %d thread(s) each), global batch %d, %d steps; transform offset %.3g uK, "
             "scale %.3g uK", ctx.size, ctx.engine, ctx.threads, cfg.train.batch_size * ctx.size, cfg.train.steps,
             transform.offset_uK, transform.scale_uK)
    loop = _Loop(cfg, run, data, trainer, ckpt, state, monitor)
    with RequeueSignal() as signal:
        return loop.run(signal)


class RealRings(NamedTuple):
    """The training patches' ring powers, measured once for the spectrum term and the calibration filter."""

    matrix: np.ndarray   # spectrum_loss.ring_matrix: rings 0..top of the monitors' ℓ range
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
    matrix = spectrum_loss.ring_matrix(size, spectrum_loss.top_wavenumber(size, attrs["reso_arcmin"],
                                                                            attrs.get("lmax")))
    powers, moments = dist.root_computes(lambda: _spectrum_reference(transform.to_net(real), matrix))
    return RealRings(matrix, powers, moments)


def spectrum_term(cfg: GanConfig, rings: RealRings | None) -> spectrum_loss.SpectrumMatch | None:
    """G's spectrum term (every rank), aimed at the real ``rings``; None when λ = 0."""
    if cfg.train.spectrum_weight <= 0:
        return None
    return spectrum_loss.SpectrumMatch(rings.powers, rings.matrix, True, rings.moments, cfg.train.variance_weight,
                                       cfg.train.scatter_weight)


def calibration_target(cfg: GanConfig, rings: RealRings | None) -> np.ndarray | None:
    """The calibration filter's target (every rank): real mean ring powers, network units; None when off."""
    if cfg.monitor.calibration_patches <= 0:
        return None
    return rings.powers.mean(axis=0)


def _spectrum_reference(real_net: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per-patch ring powers, per-patch pixel moments) of real patches in network units."""
    return spectrum_loss.patch_ring_powers(real_net, matrix), spectrum_loss.pixel_moments(real_net).numpy()


def _objects(trainer: GanTrainer) -> dict:
    objects = {"generator": trainer.generator, "discriminator": trainer.discriminator,
               "g_optimizer": trainer.g_optimizer, "d_optimizer": trainer.d_optimizer}
    if trainer.average is not None:
        objects[AVERAGE] = trainer.average
    return objects


def _signature(cfg: GanConfig) -> dict:
    """What a checkpoint must match to be restored here (and which generator samples)."""
    return {"kind": "cmb-dcgan", "model": config.to_dict(cfg.model),
            "optimizers": [cfg.g_optimizer.name, cfg.d_optimizer.name], "sampler": AVERAGE if cfg.train.ema
            else "generator"}


def _start(cfg: GanConfig, run: Path, data: TrainData, transform: Transform,
           resume: bool) -> tuple[TrainState, Transform, str | None]:
    """A fresh state, or the state, transform and path of the checkpoint to resume.

    On resume the transform is the checkpoint's, not one fitted again.
    """
    ctx = dist.context()
    dist.on_root(config.save, cfg, run / "config.yaml")
    if not resume:
        extra = {"transform": transform._asdict(), "dataset": _dataset_info(data), "best_step": None,
                 "train_seconds": 0.0}
        return TrainState(size=ctx.size, seed=cfg.train.seed, extra=extra), transform, None
    path = dist.broadcast_object(dist.on_root(lambda: tf.train.latest_checkpoint(str(run / "checkpoints"))))
    if path is None:
        raise UserError(f"{run} has no checkpoint to resume from; drop --resume to start a new run there")
    state = read_state(path)
    return state, Transform(**state.extra["transform"]), path


def _restore(ckpt: Checkpointer, path: str, state: TrainState, trainer: GanTrainer) -> None:
    """Load checkpoint ``path`` into the trainer (every rank reads the same files)."""
    ctx = dist.context()
    ckpt.restore(path)
    if state.size != ctx.size:
        log.warning("checkpoint %s was written by %d ranks, this job has %d: training continues at step %d with "
                    "another data split and noise (not an exact resume)", path, state.size, ctx.size, state.step)
    elif state.rank_sums:
        trainer.meters.load(state.rank_sums[ctx.rank])
    state.size, state.rank_sums = ctx.size, []
    log.info("resumed from %s at step %d of %d", path, state.step, trainer.cfg.train.steps)


def _dataset_info(data: TrainData) -> dict:
    """The dataset attributes a sample set inherits (pixel size, beam, ...) and where it came from."""
    keep = ("reso_arcmin", "nside", "lmax", "fwhm_arcmin", "cl_source")
    return {**{k: data.attrs[k] for k in keep if k in data.attrs}, "path": str(data.train.root),
            "image_size": list(data.train.sample_shape("patches"))}


class _Loop:
    """The step loop of one run: steps, logs, monitors, checkpoints, the end."""

    def __init__(self, cfg: GanConfig, run: Path, data: TrainData, trainer: GanTrainer, ckpt: Checkpointer,
                 state: TrainState, monitor: RunMonitor):
        self.cfg, self.run_dir, self.data, self.trainer, self.ckpt = cfg, run, data, trainer, ckpt
        self.state, self.monitor = state, monitor
        root = dist.context().is_root
        columns = LOSS_COLUMNS + tuple(monitors.scalar_columns(monitor.probe.binning.nbins))
        self.history = History(run / "history.csv", columns, enabled=root)
        self.history.resume(state.step, key="step")
        self.board = Board(run / "tensorboard", enabled=root)
        self.last: dict | None = None
        self.window = (time.perf_counter(), state.step)

    def run(self, signal: RequeueSignal) -> int:
        freeze_garbage()
        try:
            if not self._train(signal):
                return self._requeue()
            self._finish()
            return 0
        finally:
            self.board.close()

    def _train(self, signal: RequeueSignal) -> bool:
        """Steps until ``train.steps``; False if the ranks agreed to stop for a requeue."""
        cfg, state, trainer = self.cfg.train, self.state, self.trainer
        ctx = dist.context()
        flags = {False: tf.constant(False), True: tf.constant(True)}
        bar = logs.progress(total=cfg.steps, initial=state.step, desc="gan", unit="step")
        while state.step < cfg.steps:
            epoch, first = divmod(state.step, self.data.steps_per_epoch)
            batches = feed.batches(self.data.train, ctx.rank, ctx.size, cfg.batch_size, cfg.seed, epoch,
                                   FIELDS, start_batch=first, augment="patches" if cfg.augment else None,
                                   convert=tf.convert_to_tensor)
            for (real,) in batches:
                started = time.perf_counter()
                stop, nonfinite = trainer.train_step(real, tf.constant(state.step, tf.int64), flags[signal.requested])
                trainer.after_first_step()
                state.step += 1
                state.epoch, state.batch = divmod(state.step, self.data.steps_per_epoch)
                if bool(nonfinite):
                    raise nonfinite_error(f"step {state.step}", self._last_checkpoint())
                state.extra["train_seconds"] += time.perf_counter() - started
                bar.update(1)
                self._after_step()
                if bool(stop):
                    bar.close()
                    return False
                if state.step >= cfg.steps:
                    break
        bar.close()
        return True

    def _after_step(self) -> None:
        """Log, monitor and checkpoint at the steps the config names (the same on every rank)."""
        step, t, every = self.state.step, self.cfg.train, self.cfg.monitor.every
        last = step == t.steps
        monitor_due = last or (every > 0 and step % every == 0)
        if not (monitor_due or step % t.log_every == 0):
            if step % t.checkpoint_every == 0:
                self._save()
            return
        row = self._loss_row()
        improved = False
        if monitor_due:
            result = self._monitor()
            row.update(monitors.scalar_row(result))
            improved = self.state.best is None or result["score"] < self.state.best
            if improved:
                self.state.best, self.state.extra["best_step"] = result["score"], step
                dist.on_root(_write_json, self.run_dir / "monitors" / "best.json", _without_examples(result))
        self.history.append(row)
        self.board.scalars(step, {k: v for k, v in row.items() if k not in ("step", "epoch") and v != ""})
        if improved or last or step % t.checkpoint_every == 0:
            self._save(best=improved)
        self.window = (time.perf_counter(), step)

    def _loss_row(self) -> dict:
        """Mean losses since the last row, over all ranks (collective)."""
        sums = self.trainer.meters.global_sums()
        self.trainer.meters.reset()
        step, n = self.state.step, max(sums["count"], 1.0)
        since, first = self.window
        row = {"step": step, "epoch": step / self.data.steps_per_epoch, "lr": self.trainer.g_schedule.at(step - 1),
               **{k: sums[k] / n for k in METERS[:-1]},
               "steps_per_s": (step - first) / max(time.perf_counter() - since, 1e-9),
               "seconds": self.state.extra["train_seconds"]}
        spectrum = f", spectrum {row['g_spectrum']:.4f}" if self.cfg.train.spectrum_weight > 0 else ""
        log.info("step %d/%d: D loss %.4f, G loss %.4f%s, D(x) %.3f, D(G(z)) %.3f, %.2f steps/s", step,
                 self.cfg.train.steps, row["d_loss"], row["g_loss"], spectrum, row["d_real"], row["d_fake"],
                 row["steps_per_s"])
        return row

    def _monitor(self) -> dict:
        started = time.perf_counter()
        result = {**self.monitor.run(self.trainer), "step": self.state.step}
        self.last = result
        self.state.extra["calibration_gains"] = result["calibration_gains"]  # saved with the next checkpoints
        log.info("monitor at step %d (%.1f s): %s", self.state.step, time.perf_counter() - started,
                 monitors.describe(result))
        collapse = monitors.collapse_message(result, self.cfg.monitor.collapse_fraction)
        if collapse:
            dist.on_root(log.warning, "step %d: %s", self.state.step, collapse)
        return result

    def _save(self, best: bool = False) -> str | None:
        """Checkpoint with every rank's partial log sums (collective; rank 0 writes)."""
        self.state.rank_sums = dist.allgather_object(self.trainer.meters.local())
        path = self.ckpt.save(self.state, best=best)
        self.state.rank_sums = []
        return path

    def _requeue(self) -> int:
        """Checkpoint at this step and leave with EXIT_REQUEUE."""
        path = self._save()
        dist.on_root(log.warning, "SIGUSR1: checkpointed %s at step %d", path, self.state.step)
        log.warning("stopping for requeue (exit %d); continue with --resume", dist.EXIT_REQUEUE)
        dist.barrier()  # no rank leaves before rank 0's checkpoint is on disk
        return dist.EXIT_REQUEUE

    def _last_checkpoint(self) -> str | None:
        return tf.train.latest_checkpoint(str(self.ckpt.directory))

    def _finish(self) -> None:
        """Check that all ranks agree, write ``metrics.json`` and the plots (rank 0)."""
        final = self.last if self.last is not None else self._monitor()
        digests = dist.allgather_object(weights_digest(self.trainer.variables()))
        identical = len(set(digests)) == 1
        if not identical:
            log.error("ranks ended with different weights (%s); please report this", digests)
        dist.on_root(self._write_outputs, final, identical, digests[0])
        dist.barrier()

    def _write_outputs(self, final: dict, identical: bool, digest: str) -> None:
        run, state = self.run_dir, self.state
        best_path = run / "monitors" / "best.json"
        best = json.loads(best_path.read_text()) if best_path.is_file() else _without_examples(final)
        plots = monitors.plot_run(final, self.monitor.reference, run / "history.csv", run / "plots")
        summary = {
            "cl_error_over_floor": final["cl_error_over_floor"], "ks_over_floor": final["ks_over_floor"],
            "score": final["score"], "best_step": state.extra["best_step"],
            "best_checkpoint": tf.train.latest_checkpoint(str(run / "checkpoints" / "best")),
            "final": _summary(final), "best": _summary(best),
            "goals": {"cl_error_over_floor": self.cfg.monitor.cl_goal, "ks_over_floor": self.cfg.monitor.ks_goal},
            "steps": state.step, "ranks": dist.context().size, "global_batch": self.cfg.train.batch_size *
            dist.context().size, "train_seconds": state.extra["train_seconds"], "transform": state.extra["transform"],
            "weights_identical_across_ranks": identical, "weights_sha256": digest, "plots": [str(p) for p in plots],
        }
        _write_json(run / "metrics.json", summary)
        log.info("done: %d steps in %.0f s; final C_ell error/floor %.2f, KS/floor %.2f; best score %.2f at step "
                 "%s; outputs in %s", state.step, state.extra["train_seconds"], final["cl_error_over_floor"],
                 final["ks_over_floor"], best["score"], state.extra["best_step"], run)


SUMMARY_KEYS = ("score", "cl_error_over_floor", "ks_over_floor", "ks", "ks_floor", "variance_ratio",
                "mf_v0_over_floor", "mf_v1_over_floor", "mf_v2_over_floor", "worst_bin_ell", "ell", "valid",
                "cl_ratio", "cl_rel_error", "calibration_gains", "step")


def _summary(result: dict) -> dict:
    return {k: result[k] for k in SUMMARY_KEYS if k in result}


def _without_examples(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "examples_uK"}


def _write_json(path: Path, data: dict) -> None:
    config.atomic_write_text(path, json.dumps(data, indent=1) + "\n")


# ---------------------------------------------------------------- trained generators

class TrainedGenerator:
    """A trained generator: ``generator(z)`` maps latents float32 [N, latent_dim] to patches
    float32 [N, H, W] in μK.

    Inference mode (BatchNorm uses its moving statistics), so a patch depends on its own z
    only. ``model`` is the Keras generator (network units); ``gains`` the calibration filter's
    (``train.calibration``; None: G's patches as they are); ``checkpoint`` the restored
    prefix; ``info`` holds the image size, the transform, the gains, the training step and
    the training dataset's attributes (``reso_arcmin``, ...).
    """

    def __init__(self, generator, transform: Transform, checkpoint: str, info: dict, gains=None):
        self.model = generator
        self.latent_dim = int(generator.input_shape[-1])
        self.image_size = tuple(generator.output_shape[1:])
        self.transform, self.checkpoint, self.info, self.gains = transform, checkpoint, info, gains
        spec = tf.TensorSpec((None, self.latent_dim), tf.float32)
        self._forward = tf.function(lambda z: generator(z, training=False), input_signature=[spec])

    def __call__(self, z: np.ndarray) -> np.ndarray:
        out = self.network(z)
        if self.gains is not None:
            out = calibration.apply(out, self.gains)
        return self.transform.to_uK(out.astype(np.float64)).astype(np.float32)

    def network(self, z: np.ndarray) -> np.ndarray:
        """float32 [N, H, W]: G's own patches in network units, before the calibration filter."""
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"latents must be [N, {self.latent_dim}], got {z.shape}")
        net = [self._forward(z[i:i + GENERATE_BATCH]).numpy() for i in range(0, len(z), GENERATE_BATCH)]
        return np.concatenate(net) if net else np.zeros((0, *self.image_size), np.float32)


def resolve_checkpoint(run: str | Path, checkpoint: str = "best") -> str:
    """The checkpoint prefix meant by ``checkpoint``: "best", "latest", or a path."""
    run = Path(run)
    if checkpoint in ("best", "latest"):
        folder = run / "checkpoints" / ("best" if checkpoint == "best" else "")
        path = tf.train.latest_checkpoint(str(folder)) if folder.is_dir() else None
        if path is None:
            hint = ("no monitor has run yet; use checkpoint 'latest'" if checkpoint == "best" and
                    (run / "checkpoints").is_dir() else "is it a run made by 'cosmotrain train gan'?")
            raise UserError(f"{run} has no {checkpoint} checkpoint; {hint}")
        return path
    path = Path(checkpoint)
    if path.is_dir():
        found = tf.train.latest_checkpoint(str(path))
        if found is None:
            raise UserError(f"{path} holds no checkpoint; pass a run's checkpoint prefix such as "
                            f"RUN/checkpoints/ckpt-500")
        return found
    if not Path(f"{path}.index").is_file():
        raise UserError(f"checkpoint {path} not found (no {path}.index); pass 'best', 'latest' or a checkpoint prefix")
    return str(path)


def checkpoint_sha256(path: str) -> str:
    """sha256 over a checkpoint's index and data files, in name order."""
    digest = hashlib.sha256()
    prefix = Path(path)
    for file in sorted(prefix.parent.glob(prefix.name + ".*")):
        digest.update(file.name.split(".", 1)[1].encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def load_generator(run: str | Path, checkpoint: str = "best") -> tuple[TrainedGenerator, int, str]:
    """(generator z → μK patches, latent dim, checkpoint sha256) from a GAN run's checkpoint.

    ``checkpoint`` is "best" (lowest monitor score), "latest", or a checkpoint path (prefix
    or folder). The generator and its μK transform both come from the checkpoint. Raises
    ``UserError`` for a missing or foreign checkpoint.
    """
    path = resolve_checkpoint(run, checkpoint)
    state = read_state(path)
    if state.signature.get("kind") != "cmb-dcgan":
        raise CheckpointError(f"{path} is not a GAN checkpoint (it holds a {state.signature.get('kind')!r})")
    model_cfg = config.from_dict(ModelConfig, state.signature["model"])
    generator = build_generator(model_cfg)
    sampler = state.signature.get("sampler", "generator")  # the weight average when the run kept one
    tf.train.Checkpoint(**{sampler: generator}).restore(path).expect_partial().assert_existing_objects_matched()
    transform = Transform(**state.extra["transform"])
    gains = state.extra.get("calibration_gains")  # the last monitor's calibration filter, if the run fitted one
    info = {"image_size": [model_cfg.image_size] * 2, "transform": transform._asdict(), "step": state.step,
            "dataset": state.extra.get("dataset", {}), "model": config.to_dict(model_cfg), "calibration_gains": gains}
    generator = TrainedGenerator(generator, transform, path, info, None if gains is None else np.asarray(gains))
    return generator, model_cfg.latent_dim, checkpoint_sha256(path)
