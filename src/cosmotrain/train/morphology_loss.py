"""Minkowski-functional matching for the generator: the optional ``train.morphology_weight`` term.

The spectrum term (``train.spectrum_loss``) makes G's two-point statistics right; the
referee's Minkowski test still failed most latent sets, with σ₁/σ right: G's excursion
sets had fewer isolated hot and cold spots than a Gaussian sky with the same spectrum
(docs/gan.md, "A third seed"). No filter on the spectrum changes that. This term charges G
for it directly, with the referee's own definitions made differentiable::

    J_G' = J_G + λ·S + μ·M,      M = (1/J) Σ_j [ (v̄_j − v̄_j,real)² / σ²_j,real − 1/B ]

``v_j`` are V0, V1 and V2 at the referee's thresholds ν = −2 … 2 of each patch standardised
by its own mean and σ (``science.stats.minkowski_functionals``), with the referee's central
differences on the interior pixels; the box δ of the threshold becomes a Gaussian of
``WIDTH`` σ and the area fraction its integral, so each v_j is smooth in the pixels.
``WIDTH`` is about the standard deviation of the referee's box (0.2 σ wide: 0.058) and ``SOFT`` small:
on 1024 training patches the smooth V2 is then the referee's within 1.1 % of its largest
value (|z| ≤ 1.1 over those patches) where 0.1 σ and 10⁻³ left 4.8 % (z up to 4.7), a
bias G could satisfy the term with and still fail the test (docs/gan.md, "A sharper
morphology term").
``v̄_j`` is the batch's mean, ``v̄_j,real`` and ``σ_j,real`` the mean and per-patch scatter
of real training patches measured once with the same formulas, so a real batch of B
patches scores M ≈ 0 on average. The correction is the constant 1/B, as for the spectrum
term's pixel moments: BatchNorm couples a batch's patches.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from cosmotrain.science.referee_features import THRESHOLDS
from cosmotrain.science.stats import central_differences

WIDTH = 0.06    # σ of the Gaussian that stands for δ(u − ν), in units of the patch's σ (the referee's box: 0.058)
SOFT = 1e-4     # added to |∇u|² where the curvature term divides by it (≈ 0.1 % of its mean on the CMB sets)
CHUNK = 256     # real patches measured at a time


def functionals(patches, thresholds=THRESHOLDS, width: float = WIDTH):
    """float32 [B, 3·T]: smooth V0 (T columns), V1 (T), V2 (T) of each patch float [B, H, W] (TensorFlow)."""
    x = tf.cast(patches, tf.float32)
    centred = x - tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    u = centred * tf.math.rsqrt(tf.reduce_mean(tf.square(centred), axis=[1, 2], keepdims=True) + 1e-12)
    c, ux, uy, uxx, uyy, uxy = central_differences(u)
    g2 = tf.square(ux) + tf.square(uy)
    grad = tf.sqrt(g2 + 1e-8)
    curvature = (2.0 * ux * uy * uxy - tf.square(ux) * uyy - tf.square(uy) * uxx) / (g2 + SOFT)
    levels = tf.reshape(tf.constant(thresholds, tf.float32), [1, 1, 1, -1])
    t = (c[..., None] - levels) / width  # [B, H-2, W-2, T]
    delta = tf.exp(-0.5 * tf.square(t)) / (math.sqrt(2.0 * math.pi) * width)
    v0 = tf.reduce_mean(0.5 * (1.0 + tf.math.erf(t / math.sqrt(2.0))), axis=[1, 2])
    v1 = 0.25 * tf.reduce_mean(delta * grad[..., None], axis=[1, 2])
    v2 = tf.reduce_mean(delta * curvature[..., None], axis=[1, 2]) / (2.0 * math.pi)
    return tf.concat([v0, v1, v2], axis=1)


def reference(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, per-patch σ) of the real patches' ``functionals``, float64 [3·T] each; ``real`` float [N >= 2, H, W]."""
    rows = np.concatenate([functionals(real[i:i + CHUNK]).numpy() for i in range(0, len(real), CHUNK)])
    return rows.mean(axis=0), rows.std(axis=0, ddof=1)


class MorphologyMatch:
    """``M`` of a batch of generated patches float32 [B, H, W] against the real ``reference`` (class docstring above)."""

    def __init__(self, mean: np.ndarray, scatter: np.ndarray):
        if not np.all(np.asarray(scatter) > 0):
            raise ValueError("the real patches' Minkowski functionals must scatter (N >= 2 different patches)")
        self.mean = tf.constant(mean, tf.float32)
        self.scatter = tf.constant(scatter, tf.float32)

    def __call__(self, patches):
        batch = tf.cast(tf.shape(patches)[0], tf.float32)
        z = (tf.reduce_mean(functionals(patches), axis=0) - self.mean) / self.scatter
        return tf.reduce_mean(tf.square(z) - 1.0 / batch)
