"""The generator's own layers (``models.dcgan`` builds G from them): padding without zeros,
noise inputs, the random crop, the sign flip, the ring gains, the isotropic output filter and the
beam.

Each maps float32 maps [B, h, w, C] (the crop: a canvas and two latent numbers); docs/gan.md
says why each is there and what it was measured to do.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from tensorflow.keras import layers

from cosmotrain.science import rings


def wrap(x, before: int, after: int):
    """float32 [B, h, w, ...] → [B, h + before + after, w + before + after, ...]: the map extended as a torus."""
    x = tf.concat([x[:, x.shape[1] - before:], x, x[:, :after]], axis=1)
    return tf.concat([x[:, :, x.shape[2] - before:], x, x[:, :, :after]], axis=2)


class Pad(layers.Layer):
    """float32 [B, h, w, C] → [B, h + b + a, w + b + a, C]: the map extended by its mirror image or as a torus.

    Ahead of a valid convolution, in place of zero padding. Zeros cut the positive mean of
    the ReLU maps short along the canvas's edges: G drew a frame there, common to every
    patch, that D read off one batch (docs/gan.md, "What a bad seed makes"). Mirrored or
    wrapped, every edge pixel sees neighbours like an inner one.
    """

    def __init__(self, before: int, after: int, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.before, self.after, self.mode = before, after, mode

    def call(self, x):
        if self.mode == "wrap":
            return wrap(x, self.before, self.after)
        return tf.pad(x, [[0, 0], [self.before, self.after], [self.before, self.after], [0, 0]], mode="REFLECT")

    def get_config(self):
        return {**super().get_config(), "before": self.before, "after": self.after, "mode": self.mode}


class NoiseInput(layers.Layer):
    """[x float32 [B, h, w, C], noise float32 [B, h·w]] → x + noise (as an h×w map) × a weight per channel.

    A CMB patch is a Gaussian field: thousands of independent modes. A DCGAN makes all of
    them from ``latent_dim`` numbers through its convolutions; a noise map at each scale
    hands G independent randomness where the field has it (StyleGAN's noise inputs,
    Karras et al. 2019). The weights start at 0, so G starts as it would without them.
    """

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[0][-1],), initializer="zeros")

    def call(self, inputs):
        x, noise = inputs
        return x + tf.reshape(noise, [-1, x.shape[1], x.shape[2], 1]) * self.scale


class RandomCrop(layers.Layer):
    """[canvas float32 [B, c, c, 1], u float32 [B, 2]] → the s×s patch of each canvas at the place u draws.

    u are two standard-normal latent numbers; Φ(u) · (2r + 1), floored, moves the patch's
    first row and column from the centred crop by −r … r pixels (``reach`` r, at most the
    margin), each place equally likely. With the patch always at the canvas centre, G's
    small-scale power differed by 5–7 % between the patch's centre and its edges
    (docs/gan.md), which a window-weighted statistic reads as a spectrum error; moved
    about, no place of the patch is special. A reach short of the margin keeps the patch's
    edges off the canvas's borders, where G's padding and its mirrored filters make their
    own small scales. The place is part of z, so training stays reproducible and
    resumable, and samples are drawn the same way.
    """

    def __init__(self, size: int, reach: int, **kwargs):
        super().__init__(**kwargs)
        self.size, self.reach = size, reach

    def call(self, inputs):
        canvas, u = inputs
        places, low = 2 * self.reach + 1, (canvas.shape[1] - self.size) // 2 - self.reach
        uniform = 0.5 * (1.0 + tf.math.erf(u / math.sqrt(2.0)))
        first = low + tf.clip_by_value(tf.cast(tf.floor(uniform * places), tf.int32), 0, places - 1)  # [B, 2]
        steps = tf.range(self.size)
        rows = tf.gather(canvas, first[:, :1] + steps, axis=1, batch_dims=1)
        return tf.gather(rows, first[:, 1:] + steps, axis=2, batch_dims=1)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "reach": self.reach}


class SignFlip(layers.Layer):
    """[patch float32 [B, h, w, 1], u float32 [B, 1]] → the patch, negated where u < 0.

    A Gaussian sky is as likely as its negative, so its pixel PDF and Minkowski functionals
    are symmetric about the mean. A G whose last convolution reads ReLU maps is not: seed
    4321's patches were negatively skewed (more area above the mean, less above +1σ:
    docs/gan.md). Negating half of them, by a latent number of their own, makes
    the set symmetric whatever G learns; the power spectrum does not change. No weights.
    """

    def call(self, inputs):
        x, u = inputs
        return x * tf.reshape(tf.where(u < 0.0, -1.0, 1.0), [-1, 1, 1, 1])


class RingGains(layers.Layer):
    """float32 [B, s, s, 1] → [B, s, s, 1]: each Fourier ring k ≤ |k| < k + 1 of the patch scaled by exp(w_k).

    A stack of 3×3 convolutions makes a spectrum that is smooth in ℓ: G's ring powers came
    out too low at the acoustic peaks and too high in the troughs between them (±12 %), with
    any weight on the spectrum term. One gain per ring is exactly the freedom that ripple
    needs. The patch is filtered beside its mirror images (a tile with no jump at its edges,
    ``science.calibration``'s problem) and cropped back; modes beyond the top ring keep the
    top ring's gain (on a torus, ``torus``, the canvas itself is the tile). The weights start
    at 0: the identity. A gain is exp(``rate`` × weight): Adam moves a weight about one
    learning rate per step, 2e-4, so at rate 1 a ring's power can change by a few per cent
    in 100 steps, where G's first hundreds of steps need factors of 3–10.
    """

    def __init__(self, size: int, rate: float = 1.0, torus: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.size, self.rate, self.torus = size, float(rate), torus
        self.index = tf.constant(np.minimum(rings.mode_rings(size, tile=1 if torus else 2), size // 2), tf.int32)

    def build(self, input_shape):
        self.log_gain = self.add_weight(name="log_gain", shape=(self.size // 2 + 1,), initializer="zeros")

    def call(self, x):
        tile = x[..., 0]
        if not self.torus:
            tile = tf.concat([tile, tf.reverse(tile, [1])], axis=1)
            tile = tf.concat([tile, tf.reverse(tile, [2])], axis=2)
        gain = tf.exp(self.rate * tf.gather(self.log_gain, self.index))
        modes = tf.signal.fft2d(tf.complex(tile, tf.zeros_like(tile))) * tf.complex(gain, tf.zeros_like(gain))
        return tf.math.real(tf.signal.ifft2d(modes))[:, :self.size, :self.size, None]

    def get_config(self):
        return {**super().get_config(), "size": self.size, "rate": self.rate, "torus": self.torus}


class IsotropicFilter(layers.Layer):
    """One-channel N×N convolution whose kernel is symmetric under the square's rotations and flips.

    Maps float32 [B, H, W, 1] → [B, H, W, 1]. It starts as the identity (a centred 1) and
    learns a transfer function of |k| with detail ~H/N fundamentals wide: the generated C_ℓ
    fills in the troughs between acoustic peaks, a ripple 3×3 convolutions after ×2
    upsamplings cannot undo. The symmetry keeps it from adding anisotropy; the patch is
    extended by reflection, so border pixels keep their variance, and the correlation is
    a product of FFTs (with a 25×25 ``conv2d`` a training step took 5× longer on CPU).
    """

    # The kernel is delta + STEP · weights. Adam moves every tap at one speed; at full speed
    # (STEP 1) the ~N² outer taps drifted on gradient noise, and after 2000 steps the C_ℓ
    # error above ℓ ≈ 1400 rose to 2.15 × its floor (1.21–1.42 everywhere with STEP 0.1).
    STEP = 0.1

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = size

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(self.size, self.size), initializer="zeros")
        centre = self.size * self.size // 2
        self.delta = tf.reshape(tf.one_hot(centre, self.size * self.size), (self.size, self.size))

    def call(self, x):
        k = self.delta + self.STEP * self.kernel
        turns = [k, tf.transpose(k)]
        turns += [tf.reverse(t, [0]) for t in turns]
        turns += [tf.reverse(t, [1]) for t in turns]
        kernel = tf.add_n(turns) / 8.0
        half = self.size // 2
        x = tf.pad(x[..., 0], [[0, 0], [half, half], [half, half]], mode="REFLECT")
        side = x.shape[1]  # a valid correlation as a product of FFTs: nothing wraps at this size
        spectrum = tf.signal.rfft2d(x) * tf.math.conj(tf.signal.rfft2d(tf.pad(kernel, [[0, side - self.size]] * 2)))
        y = tf.signal.irfft2d(spectrum, fft_length=[side, side])
        return y[:, :side - 2 * half, :side - 2 * half, None]

    def get_config(self):
        return {**super().get_config(), "size": self.size}


class Beam(layers.Layer):
    """A fixed circular Gaussian of FWHM ``fwhm`` pixels: float32 [B, H, W, 1] → [B, H, W, 1].

    The real patches are a sky seen through the instrument's beam, whose transfer function
    falls as exp(−ℓ²σ²/2): at the Nyquist ℓ of 4' pixels a 10' beam leaves 1e-5 of the
    sky's power. A generator's last convolutions leave pixel-scale power there that no
    loss pushes down that far; the same beam as the generator's last step suppresses it as
    the real sky's was. Truncated at 3σ, reflected at the borders (``torus``: wrapped round);
    no weights.
    """

    def __init__(self, fwhm: float, torus: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.fwhm, self.torus = float(fwhm), torus
        sigma = self.fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        self.half = max(1, math.ceil(3.0 * sigma))
        u = tf.range(-self.half, self.half + 1, dtype=tf.float32)
        g = tf.exp(-0.5 * (u / sigma) ** 2)
        g = g / tf.reduce_sum(g)
        self.rows, self.cols = tf.reshape(g, (-1, 1, 1, 1)), tf.reshape(g, (1, -1, 1, 1))  # separable

    def call(self, x):
        h = self.half
        x = wrap(x, h, h) if self.torus else tf.pad(x, [[0, 0], [h, h], [h, h], [0, 0]], mode="REFLECT")
        x = tf.nn.conv2d(x, self.rows, strides=1, padding="VALID")
        return tf.nn.conv2d(x, self.cols, strides=1, padding="VALID")

    def get_config(self):
        return {**super().get_config(), "fwhm": self.fwhm, "torus": self.torus}
