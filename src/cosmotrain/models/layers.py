"""Layers whose randomness is a pure function of (seed, rank, step), for exact resume.

Keras' own ``Dropout`` draws from a stateful random op whose position is not saved in a
checkpoint, so a resumed run would draw different masks than an uninterrupted one. The
``StepDropout`` here owns a counter-based (Philox) generator that the trainer re-keys
before every step with ``reset_rng(key, step)``: the masks of step ``s`` on rank ``r``
are the same whether or not the run was stopped and resumed in between.
"""
from __future__ import annotations

import tensorflow as tf


class StepDropout(tf.keras.layers.Layer):
    """Inverted dropout at ``rate`` (float in [0, 1)); identity when not training.

    Call ``reset_rng(key, step)`` (inside or outside a ``tf.function``) before each
    training step; without it the generator simply continues its stream.
    """

    def __init__(self, rate: float, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.rng = tf.random.Generator.from_seed(0, alg="philox")

    def reset_rng(self, key, step) -> None:
        """Re-key the generator: ``key`` (int64, per layer and rank), ``step`` (int64 global step).

        Philox's 128-bit counter is set to (0, step): each step starts a fresh stream and
        draws within a step advance the low word only, so streams of steps never overlap.
        """
        counter = tf.stack([tf.constant(0, tf.int64), tf.cast(step, tf.int64)])
        self.rng.reset_from_key_counter(tf.cast(key, tf.int64), counter)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        keep = self.rng.uniform(tf.shape(inputs), dtype=inputs.dtype) >= self.rate
        return tf.where(keep, inputs / (1.0 - self.rate), tf.zeros_like(inputs))

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate}
