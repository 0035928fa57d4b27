"""Data-parallel training of the galaxy classifier with Horovod.

The same code runs as one process or as N ranks (mpirun, horovodrun, srun). Each rank
reads its own part of every epoch (``feed.batches``), computes gradients on its
per-rank batch, and Horovod averages them, so one step uses ``batch_size x ranks`` samples.
Rank 0 writes everything (``RUN/config.yaml``, ``checkpoints/``, ``history.csv``,
``tensorboard/``, ``metrics.json``).

``train.loss`` picks the loss: ``labels`` (cross-entropy on the hard labels, over the galaxies
a class keeps: the prefix of each split with label >= 0) or ``votes`` (cross-entropy on the vote
fractions, over every galaxy, as Zoobot trains on Galaxy Zoo). Accuracy is always over the kept
galaxies; validation also reports the vote-fraction RMSE over all of them.

A run is exactly resumable: the learning rate, dropout masks and D4 augmentation are
functions of the global step, the data order is a function of (seed, epoch, rank, batch
index), and a checkpoint
holds model, optimizer, epoch, position in the epoch, and every rank's partial epoch sums.
On SIGUSR1 or SIGTERM (SLURM pre-emption, the time limit) every rank stops at the same
step, rank 0 checkpoints and all exit with ``dist.EXIT_REQUEUE``; ``--resume`` then
continues bit for bit. A stall watchdog (``runtime.stall_timeout``) ends a job in which no
rank makes progress.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import tensorflow as tf

from cosmotrain import config, dist, logs, rundir
from cosmotrain.checkpoints import Checkpointer, TrainState, newest, space_needed, variable_bytes
from cosmotrain.config import ConfigError
from cosmotrain.data import feed
from cosmotrain.data.augment import random_d4
from cosmotrain.models.classifier import ModelConfig, build_classifier
from cosmotrain.rundir import Board, History, RunDir
from cosmotrain.train.classifier_data import FIELDS, TrainData, open_data, rank_share
from cosmotrain.train.loop import RequeueSignal, agree_in_step, freeze_garbage, nonfinite_error, requeue
from cosmotrain.train.meters import Meters
from cosmotrain.train.randomness import StepRandomness, rng_key, seed_everything, stateless_seed
from cosmotrain.train.replicas import FirstStepSync, agreement, average_statistics
from cosmotrain.train.schedule import LearningRate, OptimizerConfig, make_optimizer
from cosmotrain.watchdog import RuntimeConfig, Watchdog

log = logs.get("train")

HISTORY_COLUMNS = ("epoch", "step", "lr", "loss", "accuracy", "val_loss", "val_accuracy", "samples_per_s",
                   "seconds", "val_vote_rmse")
BOARD_TAGS = {"loss": "train/loss", "accuracy": "train/accuracy", "lr": "train/learning_rate",
              "samples_per_s": "train/samples_per_second", "seconds": "train/epoch_seconds",
              "val_loss": "val/loss", "val_accuracy": "val/accuracy",
              "val_vote_rmse": "val/vote_rmse"}  # history column -> TensorBoard tag
EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1] inside logarithms
EVAL_BATCH = 256
AUGMENT_STREAM = 2  # rng_key stream of the D4 augmentation (dropout layers use 1000+)


# ---------------------------------------------------------------- configuration

@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section. ``batch_size`` is per rank; the global batch is it x ranks.

    ``augment`` turns each training image by a random element of D4 (rotations by 90°,
    flips) inside the step; ``patience`` > 0 stops after that many epochs without a better
    validation loss; ``deterministic`` makes TF's kernels deterministic (exact resume).
    ``loss``: ``labels`` (hard labels, the kept galaxies) or ``votes`` (vote fractions, all galaxies).
    """

    loss: Literal["labels", "votes"] = "labels"
    epochs: int = 30
    batch_size: int = 64
    seed: int = 1234
    augment: bool = True
    patience: int = 0
    keep_checkpoints: int = 3
    deterministic: bool = True

    def __post_init__(self):
        if min(self.epochs, self.batch_size, self.keep_checkpoints) < 1 or self.patience < 0:
            raise ConfigError(f"train.epochs, train.batch_size and train.keep_checkpoints must be >= 1 and "
                              f"train.patience >= 0 (got {self.epochs}, {self.batch_size}, {self.keep_checkpoints}, "
                              f"{self.patience})")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The ``data`` section: the dataset folder (``--data`` sets it), its splits, node-local staging.

    ``stage_dir`` (e.g. ``$TMPDIR`` or ``/dev/shm``; environment variables are expanded):
    before training, each node copies the shards its ranks will read there, once per node,
    checked against the manifest's sha256, and training reads the copies
    (``data.staging``). Empty: read the dataset where it is.
    """

    path: str = ""
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    stage_dir: str = ""


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """A classifier run's whole configuration (``configs/classifier*.yaml``); every section checks itself."""

    dataset_maker: ClassVar[str] = "cosmotrain data galaxies"  # named when --data is missing
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    allreduce: dist.AllreduceConfig = dataclasses.field(default_factory=dist.AllreduceConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)


CONFIG = ClassifierConfig  # what `cosmotrain train classifier` reads


# ---------------------------------------------------------------- the model and its steps

class ClassifierTrainer:
    """Model, optimizer and compiled steps of one rank; no files, no data loading.

    ``train_step(images uint8 [B,H,W,3], labels int8 [B], [votes float32 [B,3],] stop bool)``
    does one data-parallel update and returns (local loss, stop anywhere, NaN anywhere); the
    vote fractions are passed with ``train.loss: votes`` only.
    """

    def __init__(self, cfg: ClassifierConfig, image_shape: tuple, n_classes: int, steps_per_epoch: int):
        ctx = dist.context()
        self.global_batch = cfg.train.batch_size * ctx.size
        self.allreduce = cfg.allreduce
        self.loss = cfg.train.loss
        self.model = build_classifier(cfg.model, image_shape, n_classes)
        self.schedule = LearningRate(cfg.optimizer, self.global_batch, steps_per_epoch, cfg.train.epochs)
        self.optimizer = make_optimizer(cfg.optimizer, self.schedule)
        self.optimizer.build(self.model.trainable_variables)  # slots exist before restore and broadcast
        self.randomness = StepRandomness([self.model], cfg.train.seed, ctx.rank)
        self.augment_key = rng_key(cfg.train.seed, ctx.rank, AUGMENT_STREAM) if cfg.train.augment else None
        self.meters = Meters(("loss", "count", "correct", "kept"))
        self.after_first_step = FirstStepSync(lambda: self.model.variables + list(self.optimizer.variables))
        # Plain graph functions (no AutoGraph: the steps have no tensor-dependent Python
        # control flow, and tracing does not re-read source files that may be changing).
        self.train_step = tf.function(self._train_step, autograph=False)
        spec = (tf.TensorSpec((None, *image_shape), tf.uint8), tf.TensorSpec((None,), tf.int8),
                tf.TensorSpec((None, n_classes), tf.float32))
        self.eval_step = tf.function(self._eval_step, input_signature=spec, autograph=False)

    def _train_step(self, images, labels, *more):
        *votes, stop = more
        step = self.optimizer.iterations
        self.randomness(step)  # dropout masks of this global step
        if self.augment_key is not None:  # a random rotation/flip per image, keyed by the step
            images = random_d4(images, stateless_seed(self.augment_key, step))
        labels = tf.cast(labels, tf.int32)
        with tf.GradientTape() as tape:
            probs = self.model(images, training=True)
            per_sample = vote_loss(probs, votes[0]) if votes else \
                tf.keras.losses.sparse_categorical_crossentropy(labels, probs)
            loss = tf.reduce_mean(per_sample)
        # Horovod averages the gradients over ranks (allreduce) before they are applied.
        tape = dist.distributed_tape(tape, "classifier", self.allreduce)
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        # BatchNorm's moving statistics: each rank saw its own batch, so they are averaged too.
        average_statistics(self.model.non_trainable_variables, "classifier_stats")
        stop_any, nonfinite_any = agree_in_step(stop, loss, "classifier_flags")
        correct, kept = _correct(probs, labels)
        self.meters.add(tf.reduce_sum(per_sample), tf.size(labels), correct, kept)
        return loss, stop_any, nonfinite_any

    def _eval_step(self, images, labels, votes):
        """Sums over a batch: loss (the training loss's kind), its count, correct, kept, squared vote errors."""
        labels = tf.cast(labels, tf.int32)
        probs = self.model(images, training=False)
        kept = tf.cast(labels >= 0, tf.float64)
        squared = tf.reduce_sum(tf.cast(tf.square(probs - votes), tf.float64))
        correct, n_kept = _correct(probs, labels)
        if self.loss == "votes":
            loss, count = tf.reduce_sum(tf.cast(vote_loss(probs, votes), tf.float64)), tf.size(labels)
        else:
            hard = tf.keras.losses.sparse_categorical_crossentropy(tf.maximum(labels, 0), probs)
            loss, count = tf.reduce_sum(tf.cast(hard, tf.float64) * kept), n_kept
        return loss, count, correct, n_kept, squared, tf.size(labels)

    def evaluate(self, batches) -> dict:
        """Loss, accuracy (kept galaxies) and vote RMSE (all) over all ranks' ``batches`` (collective)."""
        sums = np.zeros(6)
        for images, labels, votes in batches:
            sums += [float(x) for x in self.eval_step(images, labels, votes)]
        loss, count, correct, kept, squared, everyone = dist.allreduce_sum_array(sums)
        return {"val_loss": loss / max(count, 1), "val_accuracy": correct / max(kept, 1),
                "val_vote_rmse": float(np.sqrt(squared / max(3 * everyone, 1)))}


def vote_loss(probs, votes):
    """Cross-entropy of predicted ``probs`` [B, C] against vote fractions ``votes`` [B, C] (float32 [B]).

    -Σ_c v_c log p_c: the multinomial log-likelihood of the votes (up to a constant), as
    Zoobot trains on Galaxy Zoo; fractions that sum to less than 1 (the Kaggle tree's) weigh
    their galaxy less.
    """
    return -tf.reduce_sum(votes * tf.math.log(tf.clip_by_value(probs, EPSILON, 1.0)), axis=1)


def _number(value):
    """A history cell (a number, or its text after a resume) as a float."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if float(number).is_integer() and "." not in str(value) else number


def _correct(probs, labels):
    """(correct, kept) int32 counts of a batch: galaxies of label -1 (no class kept) are in neither."""
    kept = labels >= 0
    hits = tf.logical_and(kept, tf.equal(tf.argmax(probs, axis=1, output_type=tf.int32), labels))
    return tf.reduce_sum(tf.cast(hits, tf.int32)), tf.reduce_sum(tf.cast(kept, tf.int32))


# ---------------------------------------------------------------- the run

def train(cfg: ClassifierConfig, run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> int:
    """Train (or, with ``resume``, continue) the run in ``run_dir``; returns the exit code.

    0 when the run is complete, ``dist.EXIT_REQUEUE`` when it stopped on SIGUSR1 after
    checkpointing. Bad input raises ``UserError`` before any training.
    """
    with RequeueSignal() as signal:  # listen from the start: a signal during set-up is not lost
        return prepare(cfg, run_dir, resume, overwrite).execute(signal)


def prepare(cfg: ClassifierConfig, run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> "Loop":
    """Check the input and config, build the model, then claim ``run_dir`` and restore it if resuming."""
    ctx = dist.context()
    data = open_data(cfg)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    trainer = ClassifierTrainer(cfg, data.image_shape, len(data.class_names), data.steps)
    weights = variable_bytes(trainer.model.variables + list(trainer.optimizer.variables))
    run = rundir.claim(run_dir, resume, overwrite, space_needed(weights, cfg.train.keep_checkpoints))
    ckpt = Checkpointer(run.checkpoints, {"model": trainer.model, "optimizer": trainer.optimizer},
                        _signature(cfg, data), keep=cfg.train.keep_checkpoints, on_first_save=run.drop_replaced)
    state = _start(cfg, run, ckpt, trainer, resume)
    log.info("%d rank(s) (%s, %d thread(s) each), global batch %d, peak lr %.3g, warmup %d steps",
             ctx.size, ctx.engine, ctx.threads, trainer.global_batch, trainer.schedule.peak,
             trainer.schedule.warmup_steps)
    return Loop(cfg, run, data, trainer, ckpt, state)


def _signature(cfg: ClassifierConfig, data: TrainData) -> dict:
    """What a checkpoint must match to be restored here.

    The network's shape, not how it is trained: ``batch_norm_momentum`` (how fast BatchNorm's
    moving statistics follow) is left out, so runs saved before it existed still resume.
    """
    model = {k: v for k, v in config.to_dict(cfg.model).items() if k != "batch_norm_momentum"}
    return {"kind": "galaxy-classifier", "model": model, "image_shape": list(data.image_shape),
            "classes": list(data.class_names), "optimizer": cfg.optimizer.name}


def _start(cfg: ClassifierConfig, run: RunDir, ckpt: Checkpointer, trainer: ClassifierTrainer,
           resume: bool) -> TrainState:
    """A fresh state, or the restored one (weights, optimizer and this rank's partial sums)."""
    ctx = dist.context()
    path = ckpt.latest() if resume else None
    if path is None:  # a new run, or --resume of one that never reached its first checkpoint (claim said so)
        run.save_config(cfg)
        return TrainState(size=ctx.size, seed=cfg.train.seed)
    rundir.report_changed_settings(run, cfg)
    if any(run.eval.glob("metrics*.json")):
        logs.root_warning(log, "%s evaluates the run as it was before this resume; when training ends, evaluate it "
                          "again: cosmotrain evaluate classifier --run %s --overwrite", run.eval, run)
    state = ckpt.restore(path)
    if state.batch and state.size != ctx.size:
        logs.root_warning(log, "checkpoint %s was taken mid-epoch on %d ranks, this job has %d: epoch %d restarts "
                          "from its beginning (not an exact resume)", path, state.size, ctx.size, state.epoch + 1)
        state.batch, state.rank_sums = 0, []
    if state.rank_sums:
        trainer.meters.load(state.rank_sums[ctx.rank])
    state.size = ctx.size
    run.save_config(cfg)
    log.info("resumed from %s: %d epoch(s) and %d batch(es) done, global step %d",
             path, state.epoch, state.batch, state.step)
    return state


class Loop:
    """One prepared run: the epoch loop with its validation, checkpoints and records."""

    def __init__(self, cfg: ClassifierConfig, run: RunDir, data: TrainData, trainer: ClassifierTrainer,
                 ckpt: Checkpointer, state: TrainState):
        self.cfg, self.run_dir, self.data, self.trainer, self.ckpt, self.state = cfg, run, data, trainer, ckpt, state
        self.history = History(run.history, HISTORY_COLUMNS)
        self.history.resume(state.epoch)
        self.board = Board(run.tensorboard, BOARD_TAGS)
        self.watch = Watchdog(run.heartbeat, cfg.runtime.stall_timeout)
        self.stopped_early = False

    def execute(self, signal: RequeueSignal | None = None) -> int:
        """Train to the configured epoch (or early stop, or a stop signal); returns the exit code."""
        if signal is not None:
            return self._epochs(signal)
        with RequeueSignal() as own:
            return self._epochs(own)

    def _epochs(self, signal: RequeueSignal) -> int:
        freeze_garbage()
        try:
            with self.watch:
                return self._each_epoch(signal)
        finally:
            self.board.close()

    def _each_epoch(self, signal: RequeueSignal) -> int:
        for epoch in range(self.state.epoch, self.cfg.train.epochs):
            if not self.train_epoch(epoch, signal):
                return requeue(self.ckpt, self.state, self.trainer.meters.local(),
                               f"epoch {self.state.epoch + 1}, batch {self.state.batch}", received=signal.received)
            self._end_epoch()
            if self.stopped_early:
                break
            if dist.agree(signal.requested) and epoch + 1 < self.cfg.train.epochs:
                return requeue(self.ckpt, self.state, [], f"the end of epoch {self.state.epoch}", saved=True,
                               received=signal.received)
        self.watch.progress(self.state.step, "finishing")
        self._finish()
        return 0

    def train_epoch(self, epoch: int, signal: RequeueSignal, batches=None) -> bool:
        """Run the rest of ``epoch``; False if the ranks agreed to stop for a requeue.

        ``batches`` (an iterable of (images, labels[, votes])) replaces the HDF5 pipeline; the
        benchmarks use it to time the same loop on in-memory data.
        """
        cfg, state, trainer = self.cfg.train, self.state, self.trainer
        if batches is None:
            batches = self.pipeline(epoch, state.batch)
        flags = {False: tf.constant(False), True: tf.constant(True)}
        bar = logs.progress(total=self.data.steps, initial=state.batch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                            unit="step", leave=False)
        start, first, shown = time.perf_counter(), state.batch, 0.0
        try:
            for batch in batches:
                self.watch.progress(state.step, "training")
                _, stop, nonfinite = trainer.train_step(*batch, flags[signal.requested])
                trainer.after_first_step()
                state.batch, state.step = state.batch + 1, state.step + 1
                if bool(nonfinite):
                    raise nonfinite_error(f"epoch {epoch + 1}, batch {state.batch} (global step {state.step})",
                                          self._last_checkpoint())
                bar.update(1)
                if time.perf_counter() - shown > 1.0:
                    shown = time.perf_counter()
                    bar.set_postfix(self._bar_figures(start, first), refresh=False)
                if bool(stop):
                    return False
        finally:
            bar.close()
        self.epoch_seconds = time.perf_counter() - start
        self.epoch_samples = (state.batch - first) * trainer.global_batch
        return True

    def pipeline(self, epoch: int, start_batch: int = 0):
        """This rank's training batches of ``epoch`` from ``start_batch`` on, read ahead in a thread."""
        cfg, ctx = self.cfg.train, dist.context()
        return feed.batches(self.data.train, ctx.rank, ctx.size, cfg.batch_size, cfg.seed, epoch, FIELDS[cfg.loss],
                            start_batch=start_batch, convert=feed.as_tensor)

    def _bar_figures(self, start: float, first: int) -> dict:
        loss, count, correct, kept = self.trainer.meters.local()
        rate = (self.state.batch - first) * self.trainer.global_batch / (time.perf_counter() - start)
        return {"loss": f"{loss / max(count, 1):.4f}", "acc": f"{correct / max(kept, 1):.4f}",
                "samples/s": f"{rate:.0f}"}

    def _end_epoch(self) -> None:
        """Average metrics over ranks, validate, checkpoint, record; decide early stopping."""
        state, trainer = self.state, self.trainer
        state.epoch, state.batch = state.epoch + 1, 0
        sums = trainer.meters.global_sums()
        trainer.meters.reset()
        val = trainer.evaluate(self.watch.tracked(rank_share(self.data.val, EVAL_BATCH), state.step, "validation"))
        row = {"epoch": state.epoch, "step": state.step, "lr": trainer.schedule.at(max(state.step - 1, 0)),
               "loss": sums["loss"] / sums["count"], "accuracy": sums["correct"] / max(sums["kept"], 1), **val,
               "samples_per_s": self.epoch_samples / max(self.epoch_seconds, 1e-9), "seconds": self.epoch_seconds}
        if not np.isfinite([row["loss"], row["val_loss"]]).all():
            raise nonfinite_error(f"the end of epoch {state.epoch}", self._last_checkpoint())
        improved = state.best is None or row["val_loss"] < state.best
        if improved:
            state.best, state.best_epoch, state.bad_epochs = row["val_loss"], state.epoch, 0
        else:
            state.bad_epochs += 1
        # The row goes first: a kill between the two leaves a checkpoint older than the row,
        # and resuming from it drops the row again (History.resume).
        self.history.append(row)
        self.board.scalars(state.epoch, row)
        self.watch.progress(state.step, "checkpoint")
        self.ckpt.save(state, best=improved)
        log.info("epoch %d/%d: loss %.4f acc %.4f | val_loss %.4f val_acc %.4f val_vote_rmse %.4f | %.0f samples/s | "
                 "lr %.3g%s", state.epoch, self.cfg.train.epochs, row["loss"], row["accuracy"], row["val_loss"],
                 row["val_accuracy"], row["val_vote_rmse"], row["samples_per_s"], row["lr"],
                 " | best" if improved else "")
        patience = self.cfg.train.patience
        if patience and state.bad_epochs >= patience:
            self.stopped_early = True
            log.info("early stopping: val_loss has not improved for %d epochs (best %.4f at epoch %d)",
                     patience, state.best, state.best_epoch)

    def _last_checkpoint(self) -> str | None:
        return newest(self.ckpt.directory)

    def _finish(self) -> None:
        """Check that all ranks hold the same weights; write ``metrics.json``."""
        identical, _ = agreement(self.trainer.model.variables)
        last = {k: _number(v) for k, v in self.history.rows[-1].items()} if self.history.rows else {}
        summary = {"epochs": self.state.epoch, "global_step": self.state.step, "best_epoch": self.state.best_epoch,
                   "best_val_loss": self.state.best, "stopped_early": self.stopped_early, "final": last,
                   "ranks": dist.context().size, "global_batch": self.trainer.global_batch,
                   "peak_lr": self.trainer.schedule.peak, "weights_identical_across_ranks": identical,
                   "warnings": self.data.warnings}
        rundir.write_json(self.run_dir.metrics, summary)
        log.info("done: %d epochs, best val_loss %.4f at epoch %s; outputs in %s", self.state.epoch,
                 self.state.best or float("nan"), self.state.best_epoch, self.run_dir)
