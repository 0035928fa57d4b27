"""Augmentation by the dihedral group D4: the 8 rotations by 90° and their mirror images.

A galaxy's class and a CMB field's statistics do not change when the image is turned or
mirrored, so training sees each image under a random element, and test-time augmentation
averages a classifier's answer over all 8. Element k in 0..7 is a rotation by 90°·(k mod 4),
then a left-right flip if k >= 4, in both functions here: ``d4_transform`` in NumPy (the
input thread, inference) and ``random_d4`` in TensorFlow (inside a training step).
"""
from __future__ import annotations

import numpy as np


def d4_transform(images: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Apply D4 element ``k[i]`` (int [N], 0..7) to image ``i`` of ``images`` [N, H, W, ...], H == W.

    Returns a new array of the same shape and dtype.
    """
    out = np.empty_like(images)
    for g in range(8):
        sel = np.flatnonzero(k == g)
        if len(sel):
            t = np.rot90(images[sel], g % 4, axes=(1, 2))
            out[sel] = t[:, :, ::-1] if g >= 4 else t
    return out


def random_d4(images, seed):
    """Each image of ``images`` [B, H, W, C] (H == W, static; any dtype) under a random D4 element.

    TensorFlow, for use inside a training step. Element k (uniform, from the stateless
    ``seed`` int64 [2]) is applied as by ``d4_transform``: one gather of pixels through a table
    of the 8 permutations, keyed by the global step, so a resumed run augments alike.
    """
    import tensorflow as tf

    _, height, width, channels = images.shape
    if height != width:
        raise ValueError(f"D4 augmentation needs square images, got {height}x{width}")
    k = tf.random.stateless_uniform(tf.shape(images)[:1], seed, minval=0, maxval=8, dtype=tf.int32)
    sources = tf.gather(tf.constant(_d4_tables(height)), k)  # [B, H*W]: source pixel of each pixel
    pixels = tf.reshape(images, [-1, height * width, channels])
    return tf.reshape(tf.gather(pixels, sources, batch_dims=1), tf.shape(images))


def _d4_tables(size: int) -> np.ndarray:
    """int32 [8, size*size]: for D4 element k, the flat source index of every output pixel."""
    index = np.arange(size * size, dtype=np.int32).reshape(1, size, size)
    return np.stack([d4_transform(index, np.array([k])).reshape(-1) for k in range(8)])
