"""The learning rate as a pure function of the global step, and the optimizers it drives.

``LearningRate``: base LR scaled by global batch / base batch, linear warmup, optional
cosine decay; evaluated from ``optimizer.iterations`` (saved in every checkpoint), so a
resumed run continues on the same curve. Horovod's Keras LR callbacks count epochs in
Python and go wrong after a resume (Horovod #1921).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import tensorflow as tf

from cosmotrain.config import ConfigError


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

    def __post_init__(self):
        if not (self.base_lr > 0 and self.base_batch >= 1):
            raise ConfigError(f"optimizer.base_lr must be > 0 and optimizer.base_batch >= 1 "
                              f"(got {self.base_lr}, {self.base_batch})")
        if not (self.warmup_epochs >= 0 and self.decay_epochs >= 0 and 0 <= self.final_lr_fraction <= 1):
            raise ConfigError(f"optimizer.warmup_epochs and decay_epochs must be >= 0 and final_lr_fraction in "
                              f"[0, 1] (got {self.warmup_epochs}, {self.decay_epochs}, {self.final_lr_fraction})")
        if not (0 <= self.beta_1 < 1 and 0 <= self.beta_2 < 1 and 0 <= self.momentum < 1):
            raise ConfigError(f"optimizer.beta_1, beta_2 and momentum must be in [0, 1) "
                              f"(got {self.beta_1}, {self.beta_2}, {self.momentum})")


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


def make_optimizer(cfg: OptimizerConfig, learning_rate: LearningRate) -> tf.keras.optimizers.Optimizer:
    """Adam or SGD (with momentum) driven by ``learning_rate``."""
    if cfg.name == "adam":
        return tf.keras.optimizers.Adam(learning_rate, beta_1=cfg.beta_1, beta_2=cfg.beta_2)
    return tf.keras.optimizers.SGD(learning_rate, momentum=cfg.momentum)
