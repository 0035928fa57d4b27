"""Data-parallel DCGAN training on CMB patches: setting a run up, resuming it, and its step loop.

``train`` checks the data and config, claims the run directory, draws the monitors' real
patches (``gan_monitor``), builds the trainer (``gan_step``) and restores it when resuming,
then ``Loop`` runs the steps: every rank reads its own part of each epoch, logs the losses
every ``train.log_every`` steps, runs the science monitors every ``monitor.every`` steps
(the lowest score is kept as ``checkpoints/best``, the later one on a tie), checkpoints every
``train.checkpoint_every`` steps, and at the end writes ``metrics.json`` and the plots.

Data scaling: patches arrive in μK and enter the networks as ``(x - offset) / scale`` with
``offset`` the training pixel mean and ``scale`` = ``data.scale_sigmas`` × the training pixel
σ (``models.generator.Transform``); the transform is stored in every checkpoint, so
``inference.load_generator`` returns μK. With ``monitor.calibration_patches`` > 0, each
monitor first fits G's calibration filter (the last one on ``monitor.final_calibration_factor``
times as many patches) and stores its gains in the checkpoints that follow;
``load_generator`` applies them.

Exact resume: latent vectors and label flips are stateless random draws keyed by the global
step, the data order by (seed, epoch, rank, batch), and a checkpoint holds both networks,
both optimizers, the step and every rank's partial log sums.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from cosmotrain import config, dist, logs, rundir
from cosmotrain.checkpoints import Checkpointer, TrainState, newest, read_state, space_needed, variable_bytes
from cosmotrain.data import epochs, feed, staging
from cosmotrain.data.reader import ShardSet
from cosmotrain.data.theory import dataset_theory
from cosmotrain.errors import UserError
from cosmotrain.models.dcgan import input_dim
from cosmotrain.models.generator import Transform
from cosmotrain.plots import images, pixels, spectra, training
from cosmotrain.rundir import Board, History, RunDir
from cosmotrain.science import monitors
from cosmotrain.train.gan_config import GanConfig
from cosmotrain.train.gan_monitor import (FIELDS, RunMonitor, calibration_target, monitor_patches, morphology_term,
                                          real_patches, real_rings, referee_reference, spectrum_term)
from cosmotrain.train.gan_step import METERS, GanTrainer
from cosmotrain.train.loop import RequeueSignal, freeze_garbage, nonfinite_error, requeue
from cosmotrain.train.randomness import seed_everything
from cosmotrain.train.replicas import agreement
from cosmotrain.watchdog import Watchdog

log = logs.get("train")

CONFIG = GanConfig  # what `cosmotrain train gan` reads

LOSS_COLUMNS = ("step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "g_spectrum", "g_morphology", "lr",
                "steps_per_s", "seconds")
BOARD_TAGS = {"d_loss": "train/discriminator_loss", "g_loss": "train/generator_loss", "d_real": "train/D(x)",
              "d_fake": "train/D(G(z))", "g_spectrum": "train/generator_spectrum_term",
              "g_morphology": "train/generator_morphology_term", "lr": "train/learning_rate",
              "steps_per_s": "train/steps_per_second", "seconds": "train/seconds", "score": "monitor/score",
              "cl_error_over_floor": "monitor/cl_error_over_floor_worst_bin", "ks_over_floor": "monitor/ks_over_floor",
              "ks": "monitor/ks_distance", "variance_ratio": "monitor/pixel_variance_ratio",
              **{f"mf_{v}_over_floor": f"monitor/minkowski_{v}_over_floor" for v in ("v0", "v1", "v2")}}
REFEREE_COLUMNS = ("referee_badness", "referee_failed")  # history: the best-checkpoint referee, when on
REQUIRED_ATTRS = ("reso_arcmin",)
BEST_BY = {"referee": "referee_badness", "monitors": "score"}  # the monitor result that picks checkpoints/best
AVERAGE = "generator_average"  # checkpoint name of the moving average of G's weights
SUMMARY_KEYS = ("score", "cl_error_over_floor", "ks_over_floor", "ks", "ks_floor", "variance_ratio",
                "mf_v0_over_floor", "mf_v1_over_floor", "mf_v2_over_floor", "worst_bin_ell", "ell", "valid",
                "cl_ratio", "cl_rel_error", "calibration_gains", "step", "referee_badness", "referee_failed", "referee_p")


# ---------------------------------------------------------------- data

@dataclasses.dataclass
class TrainData:
    """The opened training split and what training needs to know about it."""

    train: ShardSet
    val: ShardSet
    attrs: dict
    steps_per_epoch: int


def open_data(cfg: GanConfig) -> TrainData:
    """Open and check the CMB training split against the model, before any work."""
    train = ShardSet(cfg.data.path, cfg.data.train_split, kind="cmb", shared=True)
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
    ranks = dist.context().size
    steps = epochs.split_steps(train, cfg.train.batch_size, ranks)
    val = open_val(cfg)
    monitors.check_config(cfg.monitor, train.n, val.n, ranks)
    log.info("data: %d training patches of %dx%d at %.3g'/pixel; %d steps per epoch; monitors against %d patches "
             "of split '%s'", train.n, size, size, attrs["reso_arcmin"], steps, val.n, cfg.data.val_split)
    if cfg.data.stage_dir:  # node-local copies of the shards each node's ranks read, every epoch
        n_epochs = -(-cfg.train.steps // steps)
        reads = {train.split: lambda r: [run for e in range(n_epochs)
                                         for run in epochs.epoch_runs(train.n, r, ranks, cfg.train.seed, e)]}
        staged = staging.stage(cfg.data.path, cfg.data.stage_dir, reads)
        train = ShardSet(staged, train.split, kind="cmb", shared=True)
    return TrainData(train, val, attrs, steps)


def open_val(cfg: GanConfig) -> ShardSet:
    """The split the monitors score against (skies training never sees); a clear error without one."""
    from cosmotrain.data.reader import read_manifest

    splits = read_manifest(cfg.data.path)["splits"]
    if cfg.data.val_split not in splits or cfg.data.val_split == cfg.data.train_split:
        raise UserError(f"{cfg.data.path} has no '{cfg.data.val_split}' split apart from the training one for the "
                        f"monitors (splits: {', '.join(splits)}); make the dataset with splits.val > 0 or pass "
                        f"--set data.val_split=NAME")
    return ShardSet(cfg.data.path, cfg.data.val_split, kind="cmb", shared=True)


# ---------------------------------------------------------------- the run

def train(cfg: GanConfig, run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> int:
    """Train (or, with ``resume``, continue) the GAN run in ``run_dir``; returns the exit code.

    0 when the run is complete, ``dist.EXIT_REQUEUE`` when it stopped on SIGUSR1 or SIGTERM
    after checkpointing. Bad input raises ``UserError`` before any training.
    """
    with RequeueSignal() as signal:  # listen from the start: a signal during set-up is not lost
        return prepare(cfg, run_dir, resume, overwrite).run(signal)


def prepare(cfg: GanConfig, run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> "Loop":
    """Check the input and config, claim ``run_dir``, build the trainer and restore it if resuming."""
    ctx = dist.context()
    data = open_data(cfg)
    run = rundir.claim(run_dir, resume, overwrite, _space_needed(cfg))
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    real = dist.root_computes(monitor_patches, data.train, cfg.monitor, share=False)
    fitted = dist.root_computes(lambda: Transform.fit(real[:cfg.monitor.reference], cfg.data.scale_sigmas))
    state, transform, path = _start(cfg, run, data, fitted, resume)
    measured = real_rings(cfg, real, transform, data.attrs)
    held_out = dist.root_computes(real_patches, data.val, min(cfg.monitor.reference, data.val.n), cfg.monitor.seed,
                                  share=False)
    monitor = RunMonitor(cfg.monitor, held_out, real, data.attrs, input_dim(cfg.model),
                         calibration_target(cfg, measured), referee_reference(cfg))
    trainer = GanTrainer(cfg, transform, data.steps_per_epoch, spectrum_term(cfg, measured),
                         morphology_term(cfg, real))
    ckpt = Checkpointer(run.checkpoints, _objects(trainer), _signature(cfg), keep=cfg.train.keep_checkpoints,
                        on_first_save=run.drop_replaced)
    if path is not None:
        _restore(ckpt, path, state, trainer)
    log.info("%d rank(s) (%s, %d thread(s) each), global batch %d, %d steps; transform offset %.3g uK, "
             "scale %.3g uK", ctx.size, ctx.engine, ctx.threads, cfg.train.batch_size * ctx.size, cfg.train.steps,
             transform.offset_uK, transform.scale_uK)
    return Loop(cfg, run, data, trainer, ckpt, state, monitor)


def _space_needed(cfg: GanConfig) -> int:
    """Bytes the run's checkpoints and records take at most: both networks, Adam's two slots for
    each, and the weight average of G (``checkpoints.space_needed``). The networks are built
    once to count their weights, then dropped (the random state is set afterwards)."""
    from cosmotrain.models.dcgan import build_discriminator, build_generator

    generator, discriminator = build_generator(cfg.model), build_discriminator(cfg.model)
    weights = 3 * variable_bytes(generator.variables + discriminator.variables)
    weights += variable_bytes(generator.variables) if cfg.train.ema else 0
    tf.keras.backend.clear_session()
    return space_needed(weights, cfg.train.keep_checkpoints)


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


def _start(cfg: GanConfig, run: RunDir, data: TrainData, transform: Transform,
           resume: bool) -> tuple[TrainState, Transform, str | None]:
    """A fresh state, or the state, transform and path of the checkpoint to resume.

    On resume the transform is the checkpoint's, not one fitted again.
    """
    ctx = dist.context()
    path = dist.root_computes(newest, run.checkpoints) if resume else None
    if path is None:  # a new run, or --resume of one that never reached its first checkpoint (claim said so)
        run.save_config(cfg)
        extra = {"transform": transform._asdict(), "dataset": _dataset_info(data), "best_step": None,
                 "train_seconds": 0.0}
        return TrainState(size=ctx.size, seed=cfg.train.seed, extra=extra), transform, None
    rundir.report_changed_settings(run, cfg)
    run.save_config(cfg)
    state = read_state(path)
    return state, Transform(**state.extra["transform"]), path


def _restore(ckpt: Checkpointer, path: str, state: TrainState, trainer: GanTrainer) -> None:
    """Load checkpoint ``path`` into the trainer (every rank reads the same files)."""
    ctx = dist.context()
    ckpt.restore(path)
    if state.size != ctx.size:
        logs.root_warning(log, "checkpoint %s was written by %d ranks, this job has %d: training continues at step "
                          "%d with another data split and noise (not an exact resume)", path, state.size, ctx.size,
                          state.step)
    elif state.rank_sums:
        trainer.meters.load(state.rank_sums[ctx.rank])
    state.size, state.rank_sums = ctx.size, []
    log.info("resumed from %s at step %d of %d", path, state.step, trainer.cfg.train.steps)


def _dataset_info(data: TrainData) -> dict:
    """The dataset attributes a sample set inherits (pixel size, beam, ...) and where it came from."""
    keep = ("reso_arcmin", "nside", "lmax", "fwhm_arcmin", "cl_source")
    return {**{k: data.attrs[k] for k in keep if k in data.attrs}, "path": str(data.train.root),
            "image_size": list(data.train.sample_shape("patches"))}


class Loop:
    """The step loop of one run: steps, logs, monitors, checkpoints, the end."""

    def __init__(self, cfg: GanConfig, run: RunDir, data: TrainData, trainer: GanTrainer, ckpt: Checkpointer,
                 state: TrainState, monitor: RunMonitor):
        self.cfg, self.run_dir, self.data, self.trainer, self.ckpt = cfg, run, data, trainer, ckpt
        self.state, self.monitor = state, monitor
        columns = LOSS_COLUMNS + tuple(monitors.scalar_columns(monitor.probe.binning.nbins)) + REFEREE_COLUMNS
        self.history = History(run.history, columns)
        self.history.resume(state.step, key="step")
        self.board = Board(run.tensorboard, {**BOARD_TAGS, **_per_bin_tags(monitor.probe.binning.ell)})
        self.watch = Watchdog(run.heartbeat, cfg.runtime.stall_timeout)
        self.last: dict | None = None
        self.window = (time.perf_counter(), state.step)

    def run(self, signal: RequeueSignal) -> int:
        freeze_garbage()
        try:
            with self.watch:
                if not self._train(signal):
                    return requeue(self.ckpt, self.state, self.trainer.meters.local(), f"step {self.state.step}",
                                   received=signal.received)
                self.watch.progress(self.state.step, "finishing")
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
                                   convert=feed.as_tensor)
            for (real,) in batches:
                self.watch.progress(state.step, "training")
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
            result = self._monitor(last)
            row.update(monitors.scalar_row(result), **_referee_cells(result))
            choice = result[BEST_BY[self.cfg.monitor.best_by]]
            improved = self.state.best is None or choice <= self.state.best  # a tie: the later, longer trained
            if improved:
                self.state.best, self.state.extra["best_step"] = choice, step
                rundir.write_json(self.run_dir.best_monitor, _without_examples(result))
        self.history.append(row)
        self.board.scalars(step, row)
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
        terms = f", spectrum {row['g_spectrum']:.4f}" if self.cfg.train.spectrum_weight > 0 else ""
        if self.cfg.train.morphology_weight > 0:
            terms += f", morphology {row['g_morphology']:.4f}"
        log.info("step %d/%d: D loss %.4f, G loss %.4f%s, D(x) %.3f, D(G(z)) %.3f, %.2f steps/s", step,
                 self.cfg.train.steps, row["d_loss"], row["g_loss"], terms, row["d_real"], row["d_fake"],
                 row["steps_per_s"])
        return row

    def _monitor(self, last: bool = False) -> dict:
        self.watch.progress(self.state.step, "monitor")
        started = time.perf_counter()
        result = {**self.monitor.run(self.trainer, last), "step": self.state.step}
        self.last = result
        self.state.extra["calibration_gains"] = result["calibration_gains"]  # saved with the next checkpoints
        filtered = f"; filter fitted on {result['calibration_patches']} patches" if result["calibration_patches"] else ""
        log.info("monitor at step %d (%.1f s%s): %s", self.state.step, time.perf_counter() - started, filtered,
                 monitors.describe(result))
        if "referee_badness" in result:
            log.info("referee at step %d against the validation skies: badness %.1f, failed: %s", self.state.step,
                     result["referee_badness"], ", ".join(result["referee_failed"]) or "none")
        collapse = monitors.collapse_message(result, self.cfg.monitor.collapse_fraction)
        if collapse:
            logs.root_warning(log, "step %d: %s", self.state.step, collapse)
        return result

    def _save(self, best: bool = False) -> str | None:
        """Checkpoint with every rank's partial log sums (collective; rank 0 writes)."""
        self.watch.progress(self.state.step, "checkpoint")
        return self.ckpt.save_all(self.state, self.trainer.meters.local(), best=best)

    def _last_checkpoint(self) -> str | None:
        return newest(self.ckpt.directory)

    def _finish(self) -> None:
        """Check that all ranks agree, write ``metrics.json`` and the plots (rank 0)."""
        final = self.last if self.last is not None else self._monitor(last=True)
        identical, digest = agreement(self.trainer.variables())
        rundir.write_with(self._write_outputs, final, identical, digest)
        dist.barrier()

    def _write_outputs(self, final: dict, identical: bool, digest: str) -> None:
        run, state = self.run_dir, self.state
        best = json.loads(run.best_monitor.read_text()) if run.best_monitor.is_file() else _without_examples(final)
        plots = self._plots(final)
        summary = {
            "cl_error_over_floor": final["cl_error_over_floor"], "ks_over_floor": final["ks_over_floor"],
            "score": final["score"], "best_step": state.extra["best_step"], "best_by": self.cfg.monitor.best_by,
            "best_checkpoint": newest(run.best_checkpoints),
            "final": _summary(final), "best": _summary(best),
            "goals": {"cl_error_over_floor": self.cfg.monitor.cl_goal, "ks_over_floor": self.cfg.monitor.ks_goal},
            "steps": state.step, "ranks": dist.context().size, "global_batch": self.cfg.train.batch_size *
            dist.context().size, "train_seconds": state.extra["train_seconds"], "transform": state.extra["transform"],
            "weights_identical_across_ranks": identical, "weights_sha256": digest, "plots": [str(p) for p in plots],
        }
        rundir.write_json(run.metrics, summary)
        log.info("done: %d steps in %.0f s; final C_ell error/floor %.2f, KS/floor %.2f; best score %.2f at step "
                 "%s; outputs in %s", state.step, state.extra["train_seconds"], final["cl_error_over_floor"],
                 final["ks_over_floor"], best["score"], state.extra["best_step"], run)

    def _plots(self, final: dict) -> list[Path]:
        """The run's figures from the final monitor ``final`` (rank 0): samples, spectra, PDF, MFs, losses."""
        reference, folder, cfg = self.monitor.reference, self.run_dir.plots, self.cfg
        gen = np.asarray(final.get("examples_uK", []), dtype=np.float32)
        reso = reference.probe.binning.reso_arcmin
        title = f"{self.run_dir} at step {final['step']} (final checkpoint) against its {cfg.data.val_split} split"
        figures = {"samples.png": (images.real_and_generated, np.asarray(reference.ref.examples), gen, reso, title),
                   "spectra.png": (spectra.run_spectra, final, cfg.monitor.cl_goal, title, self._theory()),
                   "pixel_pdf.png": (pixels.pixel_pdf, final, title),
                   "minkowski.png": (pixels.minkowski, final, title, reso),
                   "losses.png": (training.gan_losses, self.run_dir.history, str(self.run_dir), cfg.monitor.cl_goal,
                                  cfg.monitor.ks_goal, self.state.extra["best_step"])}
        written = [rundir.write_figure(folder / name, *draw) for name, draw in figures.items()]
        return [path for path in written if path is not None]

    def _theory(self) -> np.ndarray | None:
        """The training patches' expected band powers in the monitors' bins (rank 0); None without an input C_ℓ."""
        try:
            return dataset_theory(self.data.train.root, self.data.attrs, self.monitor.probe.binning)
        except (UserError, OSError, KeyError, ValueError) as err:
            log.debug("no theory curve in spectra.png: %s", err)
            return None


def _per_bin_tags(ell) -> dict:
    """TensorBoard tags of the per-bin history columns, named by the bin's centre ℓ (``.../ell_0250``)."""
    tags = {}
    for b, centre in enumerate(ell):
        tags[f"cl_ratio_{b:02d}"] = f"monitor/cl_error_over_floor_by_bin/ell_{centre:04.0f}"
        tags[f"cl_rel_error_{b:02d}"] = f"monitor/cl_relative_error_by_bin/ell_{centre:04.0f}"
    return tags


def _referee_cells(result: dict) -> dict:
    """History cells of the referee on the validation skies: its badness and how many tests failed (empty when off)."""
    if "referee_badness" not in result:
        return {}
    return {"referee_badness": result["referee_badness"], "referee_failed": len(result["referee_failed"])}


def _summary(result: dict) -> dict:
    return {k: result[k] for k in SUMMARY_KEYS if k in result}


def _without_examples(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "examples_uK"}
