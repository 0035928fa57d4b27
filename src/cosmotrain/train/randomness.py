"""Randomness that depends only on (seed, rank, global step), so a resumed run draws what an uninterrupted one would.

``seed_everything`` gives every rank the same initial weights; ``StepRandomness`` re-keys
layers with a ``reset_rng(key, step)`` method (dropout masks) before each step;
``stateless_seed`` keys ``tf.random.stateless_*`` draws (a GAN's latent vectors, label
flips, augmentation) by the global step.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; with ``deterministic``, make TF ops deterministic.

    Every rank uses the same ``seed`` here, so every rank builds identical initial weights.
    Per-rank randomness (dropout masks, noise) comes from ``StepRandomness`` /
    ``stateless_seed``, keyed by rank explicitly.
    """
    tf.keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def rng_key(seed: int, rank: int, stream: int) -> int:
    """A 63-bit key for (seed, rank, stream), well mixed (NumPy's SeedSequence)."""
    state = np.random.SeedSequence([seed, rank, stream]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def stateless_seed(key: int, step) -> tf.Tensor:
    """int64 [2] seed for ``tf.random.stateless_*`` ops: a fresh stream per global ``step``."""
    return tf.stack([tf.constant(key, tf.int64), tf.cast(step, tf.int64)])


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
