"""The GAN's networks, optimizers and its compiled data-parallel step (one rank; no files, no data).

The losses, computed from D's logits with a numerically stable sigmoid cross-entropy::

    J_D = -(1/N) Σ_i log D(x_i) + log(1 - D(G(z_i)))      (D learns, G fixed)
    J_G = -(1/N) Σ_i log D(G(z_i))                        (G learns, D fixed; non-saturating)

with optional one-sided label smoothing (real label 1 - s) and label flipping (each sample's
D label swapped with probability p). With ``train.r1_weight`` γ > 0, D minimises J_D +
γ/2 · mean |∇_x D(x)|² over the real batch (R1, Mescheder et al. 2018). With ``train.spectrum_weight`` λ > 0, G minimises
J_G + λ·S, S being its batch's power-spectrum mismatch with the training patches
(``train.spectrum_loss``), and with ``train.morphology_weight`` μ > 0 also μ·M, M its batch's
Minkowski-functional mismatch with them (``train.morphology_loss``). Each step updates D on
a real batch and a fresh fake batch, then G on another fresh fake batch.

Distribution (Horovod, through ``cosmotrain.dist``): every rank draws its own latent vectors,
keyed by (seed, rank, step); each network has its own ``distributed_tape`` with a distinct
name (two tapes with one name crash, Horovod #784), so its gradients are averaged over
ranks before its optimizer applies them. After the first step both networks and both
optimizers are broadcast from rank 0, and after every step the BatchNorm moving statistics
are averaged (``train.replicas``), so all ranks hold the same state.

With ``train.ema`` > 0 the trainer also keeps an exponential moving average of G's weights
(updated after every step, identical on all ranks); the monitors, the best checkpoint and
``inference.load_generator`` then use that average, which fluctuates much less than G itself.
"""
from __future__ import annotations

import tensorflow as tf

from cosmotrain import dist
from cosmotrain.models.dcgan import build_discriminator, build_generator, input_dim, moving_statistics
from cosmotrain.models.generator import Transform, TrainedGenerator
from cosmotrain.train import morphology_loss, spectrum_loss
from cosmotrain.train.gan_config import GanConfig
from cosmotrain.train.loop import agree_in_step
from cosmotrain.train.meters import Meters
from cosmotrain.train.randomness import rng_key, stateless_seed
from cosmotrain.train.replicas import FirstStepSync, average_statistics
from cosmotrain.train.schedule import LearningRate, make_optimizer

METERS = ("d_loss", "g_loss", "g_spectrum", "g_morphology", "d_real", "d_fake", "count")


def _bce(labels, logits):
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


class GanTrainer:
    """Both networks, both optimizers and the compiled step of one rank; no files, no data.

    ``train_step(real float32 [B,H,W] μK, step int64, stop bool)`` does one data-parallel
    update of D then G and returns (stop anywhere, NaN anywhere). ``spectrum`` is G's
    spectrum term (``spectrum_term``), needed when ``train.spectrum_weight`` > 0.
    """

    def __init__(self, cfg: GanConfig, transform: Transform, steps_per_epoch: int,
                 spectrum: spectrum_loss.SpectrumMatch | None = None,
                 morphology: morphology_loss.MorphologyMatch | None = None):
        ctx = dist.context()
        self.cfg, self.transform = cfg, transform
        self.spectrum = spectrum if cfg.train.spectrum_weight > 0 else None
        if cfg.train.spectrum_weight > 0 and spectrum is None:
            raise ValueError("train.spectrum_weight > 0 needs the spectrum term (gan_monitor.spectrum_term)")
        self.morphology = morphology if cfg.train.morphology_weight > 0 else None
        if cfg.train.morphology_weight > 0 and morphology is None:
            raise ValueError("train.morphology_weight > 0 needs the morphology term (gan_monitor.morphology_term)")
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
        self._statistics = moving_statistics(self.generator) + moving_statistics(self.discriminator)
        self.average = self._build_average() if cfg.train.ema > 0 else None
        self.after_first_step = FirstStepSync(self.variables)
        self.train_step = tf.function(self._train_step)
        self.generate = TrainedGenerator(self.average or self.generator, transform)

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
        latent = [batch, input_dim(self.cfg.model)]
        # Discriminator step, J_D: real patches labelled 1, fresh fakes labelled 0; G is fixed.
        real_label, fake_label = self._labels(batch, step)
        z = tf.random.stateless_normal(latent, stateless_seed(self.keys[0], step))
        with tf.GradientTape() as tape:
            real_logit, r1 = self._real_logit(x)
            fake_logit = D(G(z, training=True), training=True)
            d_loss = _bce(real_label, real_logit) + _bce(fake_label, fake_logit)
            d_objective = d_loss + 0.5 * self.cfg.train.r1_weight * r1
        # Horovod averages D's gradients over ranks; its own name keeps its tensors apart from G's.
        tape = dist.distributed_tape(tape, "discriminator", self.cfg.allreduce)
        grads = tape.gradient(d_objective, D.trainable_variables)
        self.d_optimizer.apply_gradients(zip(grads, D.trainable_variables))
        # Generator step, non-saturating J_G = -mean log D(G(z)) on new fakes; D is fixed.
        z = tf.random.stateless_normal(latent, stateless_seed(self.keys[1], step))
        with tf.GradientTape() as tape:
            fake = G(z, training=True)
            g_logit = D(fake, training=True)
            g_loss = _bce(tf.ones_like(g_logit), g_logit)
            g_spectrum = self.spectrum(fake) if self.spectrum is not None else tf.constant(0.0)
            g_morphology = self.morphology(fake) if self.morphology is not None else tf.constant(0.0)
            g_objective = (g_loss + self.cfg.train.spectrum_weight * g_spectrum
                           + self.cfg.train.morphology_weight * g_morphology)
        tape = dist.distributed_tape(tape, "generator", self.cfg.allreduce)
        grads = tape.gradient(g_objective, G.trainable_variables)
        self.g_optimizer.apply_gradients(zip(grads, G.trainable_variables))
        average_statistics(self._statistics, "gan_stats")
        if self.average is not None:
            self._update_average(step)
        stop_any, nonfinite_any = agree_in_step(stop, d_loss + g_loss, "gan_flags")
        self.meters.add(d_loss, g_loss, g_spectrum, g_morphology, tf.reduce_mean(tf.sigmoid(real_logit)),
                        tf.reduce_mean(tf.sigmoid(fake_logit)), 1)
        return stop_any, nonfinite_any

    def _real_logit(self, x):
        """D's logits [B, 1] on real patches x [B, H, W] and R1: the mean over the batch of |∂logit/∂x|² (0 when off)."""
        if self.cfg.train.r1_weight <= 0:
            return self.discriminator(x, training=True), tf.constant(0.0)
        with tf.GradientTape() as inner:
            inner.watch(x)
            logit = self.discriminator(x, training=True)
            total = tf.reduce_sum(logit)  # inside the tape, or its gradient is None
        slope = inner.gradient(total, x)
        return logit, tf.reduce_mean(tf.reduce_sum(tf.square(slope), axis=[1, 2]))

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

    def variables(self) -> list:
        """Every variable of the training state, in a fixed order."""
        average = self.average.variables if self.average is not None else []
        return (self.generator.variables + self.discriminator.variables + average
                + list(self.g_optimizer.variables) + list(self.d_optimizer.variables))
