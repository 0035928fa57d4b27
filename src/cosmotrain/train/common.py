"""What every trainer (classifier, GAN) shares: learning rate, randomness, pre-emption, records.

Everything that decides the numbers of a run is a pure function of the global step, so a run
stopped anywhere and resumed from its checkpoint computes exactly what an uninterrupted run
would have:

* ``LearningRate``: base LR scaled by global batch / base batch, linear warmup, optional
  cosine decay; evaluated from ``optimizer.iterations`` (saved in every checkpoint). Horovod's
  Keras LR callbacks count epochs in Python and go wrong after a resume (Horovod #1921).
* ``StepRandomness``: dropout masks (and any layer with ``reset_rng``) keyed by
  (seed, rank, layer, global step); ``stateless_seed`` does the same for noise such as a
  GAN's latent vectors, and ``random_d4`` for augmentation inside the step.

Around the step: ``RequeueSignal`` notes SIGUSR1 (SLURM pre-emption), ``agree_in_step`` lets
all ranks learn inside the step itself whether any rank wants to stop or saw a NaN loss (one
allreduce fused with the gradients', so no extra round trip per step), ``Meters`` keeps
per-rank sums for the epoch's metrics, and ``History``/``Board`` write ``history.csv`` and
TensorBoard logs on rank 0. ``claim_run_dir`` guards a run directory against accidents.
"""
from __future__ import annotations

import csv
import dataclasses
import gc
import hashlib
import io
import json
import math
import shutil
import signal
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import tensorflow as tf

from cosmotrain import config, dist, logs
from cosmotrain.config import ConfigError, atomic_write_text
from cosmotrain.errors import UserError

log = logs.get("train")

# What a run directory holds; --overwrite removes exactly these.
RUN_OUTPUTS = ("config.yaml", "history.csv", "metrics.json", "checkpoints", "tensorboard", "eval", "plots")


# ---------------------------------------------------------------- config

def resolve_run_config(cls: type, config_path: str | None, overrides: list[str], data: str | None,
                       run: str | Path, resume: bool, maker: str):
    """A run's config of type ``cls``: ``--config`` (or, on resume, the run's own), overrides, ``--data``.

    ``maker`` is the command that makes the dataset, named in the error when none is given.
    """
    saved = Path(run) / "config.yaml"
    if config_path is None and resume and saved.is_file():
        config_path = str(saved)
    if data is not None:
        overrides = [*overrides, f"data.path={json.dumps(str(Path(data).resolve()))}"]
    cfg = config.load(cls, config_path, overrides)
    if not cfg.data.path:
        raise ConfigError(f"no dataset given; pass --data DATASET (a folder made by '{maker}')")
    return cfg


# ---------------------------------------------------------------- learning rate

@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """An ``optimizer`` section: the optimizer and its learning-rate schedule.

    The peak LR is ``base_lr`` x (global batch / ``base_batch``) for ``scaling: linear``,
    the square root of that ratio for ``sqrt``, 1 for ``none``. It is reached linearly over
    ``warmup_epochs`` from ``base_lr`` (``warmup_from: base``, Goyal et al. 2017) or from 0,
    then held (``decay: constant``) or cosine-decayed to ``final_lr_fraction`` x peak at
    ``decay_epochs`` (0: the run's last epoch).
    """

    name: Literal["adam", "sgd"] = "adam"
    base_lr: float = 1e-3
    base_batch: int = 32
    scaling: Literal["linear", "sqrt", "none"] = "linear"
    warmup_epochs: float = 1.0
    warmup_from: Literal["base", "zero"] = "base"
    decay: Literal["constant", "cosine"] = "constant"
    decay_epochs: float = 0.0
    final_lr_fraction: float = 0.0
    beta_1: float = 0.9
    beta_2: float = 0.999
    momentum: float = 0.9


def scaled_lr(base_lr: float, global_batch: int, base_batch: int, scaling: str) -> float:
    """Peak learning rate for ``global_batch`` samples per step (all ranks together)."""
    ratio = global_batch / base_batch
    factor = {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[scaling]
    return base_lr * factor


class LearningRate(tf.keras.optimizers.schedules.LearningRateSchedule):
    """LR as a pure function of the global step (float32 scalar; computed in float64).

    ``steps_per_epoch`` is per rank (= global, every rank takes the same steps); ``epochs``
    is the run's length, used when ``cfg.decay_epochs`` is 0.
    """

    def __init__(self, cfg: OptimizerConfig, global_batch: int, steps_per_epoch: int, epochs: int):
        super().__init__()
        _check_optimizer(cfg)
        self.peak = scaled_lr(cfg.base_lr, global_batch, cfg.base_batch, cfg.scaling)
        self.start = {"base": min(cfg.base_lr, self.peak), "zero": 0.0}[cfg.warmup_from]
        self.warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
        self.total_steps = int(round((cfg.decay_epochs or epochs) * steps_per_epoch))
        self.decay = cfg.decay
        self.floor = cfg.final_lr_fraction * self.peak

    def __call__(self, step):
        s = tf.cast(step, tf.float64)
        w = float(self.warmup_steps)
        warm = self.start + (self.peak - self.start) * s / max(w, 1.0)
        if self.decay == "cosine":
            frac = tf.clip_by_value((s - w) / max(self.total_steps - w, 1.0), 0.0, 1.0)
            after = self.floor + (self.peak - self.floor) * 0.5 * (1.0 + tf.cos(math.pi * frac))
        else:
            after = tf.constant(self.peak, tf.float64)
        return tf.cast(tf.where(s < w, warm, after), tf.float32)

    def at(self, step: int) -> float:
        """The LR of update number ``step`` (0-based) as a Python float."""
        return float(self(tf.constant(step, tf.int64)))

    def get_config(self) -> dict:
        return {"peak": self.peak, "start": self.start, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "decay": self.decay, "floor": self.floor}


def _check_optimizer(cfg: OptimizerConfig) -> None:
    if cfg.base_lr <= 0 or cfg.base_batch < 1:
        raise ConfigError(f"optimizer.base_lr must be > 0 and optimizer.base_batch >= 1 "
                          f"(got {cfg.base_lr}, {cfg.base_batch})")
    if cfg.warmup_epochs < 0 or cfg.decay_epochs < 0 or not 0 <= cfg.final_lr_fraction <= 1:
        raise ConfigError("optimizer.warmup_epochs and decay_epochs must be >= 0, final_lr_fraction in [0, 1]")


def make_optimizer(cfg: OptimizerConfig, learning_rate: LearningRate) -> tf.keras.optimizers.Optimizer:
    """Adam or SGD (with momentum) driven by ``learning_rate``."""
    if cfg.name == "adam":
        return tf.keras.optimizers.Adam(learning_rate, beta_1=cfg.beta_1, beta_2=cfg.beta_2)
    return tf.keras.optimizers.SGD(learning_rate, momentum=cfg.momentum)


# ---------------------------------------------------------------- randomness

def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; with ``deterministic``, make TF ops deterministic.

    Every rank uses the same ``seed`` here, so every rank builds identical initial weights.
    Per-rank randomness (dropout masks, noise) comes from ``StepRandomness`` /
    ``stateless_seed``, keyed by rank explicitly.
    """
    tf.keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def freeze_garbage() -> None:
    """Put every object alive now (TensorFlow's, the model's) out of the garbage collector's way.

    With TensorFlow loaded, each full collection walks ~300k objects for ~0.1 s, and the
    input thread allocates enough to set off several per epoch: reading ran at half speed
    in those epochs. Objects made later are still collected as usual.
    """
    gc.collect()
    gc.freeze()


def rng_key(seed: int, rank: int, stream: int) -> int:
    """A 63-bit key for (seed, rank, stream), well mixed (NumPy's SeedSequence)."""
    state = np.random.SeedSequence([seed, rank, stream]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def stateless_seed(key: int, step) -> tf.Tensor:
    """int64 [2] seed for ``tf.random.stateless_*`` ops: a fresh stream per global ``step``."""
    return tf.stack([tf.constant(key, tf.int64), tf.cast(step, tf.int64)])


def random_d4(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Each image of ``images`` [B, H, W, C] (H == W, static; any dtype) under a random D4 element.

    Element k in 0..7 (uniform, from the stateless ``seed`` int64 [2]) is a rotation by
    90°·(k mod 4), then a left-right flip if k >= 4, as ``shards.d4_transform``. One gather
    of pixels through a table of the 8 permutations, inside the step and keyed by the
    global step, so a resumed run augments alike.
    """
    _, height, width, channels = images.shape
    if height != width:
        raise ValueError(f"D4 augmentation needs square images, got {height}x{width}")
    k = tf.random.stateless_uniform(tf.shape(images)[:1], seed, minval=0, maxval=8, dtype=tf.int32)
    sources = tf.gather(tf.constant(_d4_tables(height)), k)  # [B, H*W]: source pixel of each pixel
    pixels = tf.reshape(images, [-1, height * width, channels])
    return tf.reshape(tf.gather(pixels, sources, batch_dims=1), tf.shape(images))


def _d4_tables(size: int) -> np.ndarray:
    """int32 [8, size*size]: for D4 element k, the flat source index of every output pixel."""
    from cosmotrain.data import shards

    index = np.arange(size * size, dtype=np.int32).reshape(1, size, size)
    return np.stack([shards.d4_transform(index, np.array([k])).reshape(-1) for k in range(8)])


class StepRandomness:
    """Re-keys every layer with a ``reset_rng(key, step)`` method in ``modules``.

    Layer ``i`` on rank ``rank`` gets key ``rng_key(seed, rank, i)``: ranks draw different
    masks (they see different samples), and each step's masks depend only on the step.
    """

    def __init__(self, modules: Sequence[tf.Module], seed: int, rank: int):
        seen, self.layers = set(), []
        for module in modules:
            for sub in (module, *module.submodules):
                if hasattr(sub, "reset_rng") and id(sub) not in seen:
                    seen.add(id(sub))
                    self.layers.append(sub)
        self.keys = [rng_key(seed, rank, 1000 + i) for i in range(len(self.layers))]

    def __call__(self, step) -> None:
        """Call inside the training step, with the global step (int64 tensor) of this update."""
        for layer, key in zip(self.layers, self.keys):
            layer.reset_rng(key, step)


# ---------------------------------------------------------------- pre-emption and NaN

class RequeueSignal:
    """Notes SIGUSR1 (SLURM's warning before pre-emption or the time limit).

    Use as a context manager around the training loop; ``requested`` turns True when the
    signal arrives on this rank. The handler only sets the flag: the loop decides, at a
    step boundary and together with the other ranks, to checkpoint and exit with
    ``dist.EXIT_REQUEUE``.
    """

    def __init__(self, signum: int = signal.SIGUSR1):
        self.signum = signum
        self.requested = False
        self._previous = None

    def _note(self, signum, frame) -> None:
        self.requested = True

    def __enter__(self) -> "RequeueSignal":
        self._previous = signal.signal(self.signum, self._note)
        return self

    def __exit__(self, *exc) -> bool:
        signal.signal(self.signum, self._previous or signal.SIG_DFL)
        return False


def agree_in_step(stop_requested, loss, name: str) -> tuple[tf.Tensor, tf.Tensor]:
    """Inside a step: (any rank asked to stop, any rank's ``loss`` is NaN/inf), bool scalars.

    One small allreduce, issued in the same graph as the gradients' and fused with them by
    Horovod, so every rank learns both facts at this step's end at no extra latency. Give
    each step function its own ``name``.
    """
    local = tf.stack([tf.cast(stop_requested, tf.float32),
                      tf.cast(tf.logical_not(tf.math.is_finite(loss)), tf.float32)])
    total = dist.allreduce_mean(local, name=name)
    return total[0] > 0, total[1] > 0


class NonFiniteLoss(UserError):
    """The loss became NaN or inf: training stopped, nothing was saved after the last good state."""


def nonfinite_error(where: str, last_checkpoint: str | None) -> NonFiniteLoss:
    """The one-line message for a NaN/inf loss at ``where`` (e.g. 'epoch 3, step 120')."""
    kept = (f"the last good checkpoint {last_checkpoint} is kept" if last_checkpoint
            else "no checkpoint had been written yet")
    return NonFiniteLoss(f"loss became NaN/inf at {where}; training stopped and {kept}; "
                         f"lower optimizer.base_lr (or check the data), then rerun with --resume")


# ---------------------------------------------------------------- per-rank epoch sums

class Meters:
    """Per-rank running sums (float64) of named quantities, updated inside the step.

    ``add`` in the step, ``global_sums`` at the epoch's end (an allreduce: every rank must
    call it), ``local``/``load`` to carry a rank's partial sums through a mid-epoch
    checkpoint.
    """

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)
        self.sums = tf.Variable(tf.zeros(len(self.names), tf.float64), trainable=False, name="meters")

    def add(self, *values) -> None:
        """Add one value per name (tensors, any numeric dtype), in ``names`` order."""
        self.sums.assign_add(tf.stack([tf.cast(v, tf.float64) for v in values]))

    def local(self) -> list[float]:
        return [float(v) for v in self.sums.numpy()]

    def load(self, values: Sequence[float]) -> None:
        self.sums.assign(np.asarray(values, dtype=np.float64))

    def reset(self) -> None:
        self.sums.assign(tf.zeros_like(self.sums))

    def global_sums(self) -> dict[str, float]:
        """Sums over all ranks (collective)."""
        total = dist.allreduce_sum_array(np.asarray(self.local(), dtype=np.float64))
        return dict(zip(self.names, (float(v) for v in total)))


# ---------------------------------------------------------------- records

class History:
    """``history.csv``: one row per finished epoch, rewritten atomically by rank 0.

    On resume, ``resume(k)`` keeps the rows of epochs 1..k (rows written after the
    checkpoint being resumed are dropped, so the file matches the restored state).
    """

    def __init__(self, path: str | Path, columns: Sequence[str], enabled: bool):
        self.path, self.columns, self.enabled = Path(path), list(columns), enabled
        self.rows: list[dict] = []

    def resume(self, epochs_done: int, key: str = "epoch") -> None:
        """Keep the rows whose ``key`` column (an integer count: epoch, or step) is <= ``epochs_done``."""
        if self.path.is_file():
            self.rows = [r for r in read_history_rows(self.path) if int(r[key]) <= epochs_done]

    def append(self, row: dict) -> None:
        self.rows.append({c: row.get(c, "") for c in self.columns})
        if self.enabled:
            out = io.StringIO()
            writer = csv.DictWriter(out, self.columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)
            atomic_write_text(self.path, out.getvalue())


def read_history_rows(path: str | Path) -> list[dict]:
    """The rows of a ``history.csv`` as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def read_history(path: str | Path) -> dict[str, np.ndarray]:
    """``history.csv`` as columns: {name: float64 [epochs]} (empty cells are NaN)."""
    rows = read_history_rows(path)
    names = rows[0].keys() if rows else []
    return {n: np.array([float(r[n]) if r[n] not in ("", None) else np.nan for r in rows]) for n in names}


class Board:
    """TensorBoard scalars on rank 0 (a no-op elsewhere); one event file per process start."""

    def __init__(self, logdir: str | Path, enabled: bool):
        self.writer = tf.summary.create_file_writer(str(logdir)) if enabled else None

    def scalars(self, step: int, values: dict) -> None:
        if self.writer is None:
            return
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def weights_digest(variables: Iterable[tf.Variable]) -> str:
    """sha256 of the variables' bytes, in order (to compare states across ranks or runs)."""
    digest = hashlib.sha256()
    for v in variables:
        digest.update(np.ascontiguousarray(v.numpy()).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- run directory

def claim_run_dir(run: str | Path, resume: bool, overwrite: bool, outputs: Sequence[str] = RUN_OUTPUTS) -> Path:
    """Check, on every rank and before any work, that ``run`` may receive this run.

    A directory that already holds a run is refused unless ``resume`` (continue it) or
    ``overwrite`` (its ``outputs`` are removed by rank 0; other files are left alone).
    Rank 0 decides and tells the others, so every rank raises the same error.
    """
    run = Path(run)
    problem = dist.on_root(_run_dir_problem, run, resume, overwrite, outputs)
    problem = dist.broadcast_object(problem)
    if problem:
        raise UserError(problem)
    if overwrite:
        dist.on_root(_remove_outputs, run, outputs)
    dist.on_root(run.mkdir, parents=True, exist_ok=True)
    dist.barrier()
    return run


def _run_dir_problem(run: Path, resume: bool, overwrite: bool, outputs: Sequence[str]) -> str | None:
    if resume and overwrite:
        return "--resume and --overwrite contradict each other; pass one of them"
    if run.exists() and not run.is_dir():
        return f"run directory {run} is a file; choose a folder path for --out"
    held = [name for name in outputs if (run / name).exists()]
    if resume:
        return None if (run / "checkpoints").is_dir() else \
            f"{run} has no checkpoint to resume from; drop --resume to start a new run there"
    if held and not overwrite:
        return (f"{run} already holds a run ({', '.join(held)}); continue it with --resume, "
                f"replace it with --overwrite, or pick a new --out")
    return None


def _remove_outputs(run: Path, outputs: Sequence[str]) -> None:
    for name in outputs:
        path = run / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
