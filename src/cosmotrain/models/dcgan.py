"""DCGAN generator and discriminator for single-channel CMB patches (after Radford et al. 2015).

Generator: z [N, latent_dim] → dense → reshape to base×base×C → strided transposed
convolutions, each with BatchNorm + ReLU, halving the channels and doubling the size → a
last transposed convolution to one channel → tanh (or linear) → patches [N, H, W] in the
network's units (see ``models.generator.Transform`` for the map to μK). Two options against the
periodic ("checkerboard") artefacts of transposed convolutions, which show up as spikes in
C_ℓ at ℓ = (side / period) fundamentals: ``output_kernel`` (a final stride-1 convolution
after the last upsampling) and ``upsample: resize-*`` (resize, then convolve; Odena et al.
2016).

Discriminator: patches [N, H, W] → strided convolutions with LeakyReLU (BatchNorm on every
layer but the first, as in the paper), doubling the channels and halving the size down to
base×base → flatten → one logit [N, 1] (no sigmoid: the losses take logits).

Weights start from N(0, 0.02) as in the paper. Sizes come from ``ModelConfig``; the image
side must be ``base_size · 2^k``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal, Optional

import numpy as np
import tensorflow as tf
from tensorflow.keras import layers

from cosmotrain.errors import UserError
from cosmotrain.science import rings


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of both networks (the ``model`` section of a GAN config)."""

    image_size: int = 64          # patch side H = W in pixels; must match the dataset
    latent_dim: int = 64          # length of z
    base_size: int = 4            # spatial side where G starts and D ends
    g_filters: int = 256          # G channels at base size; halved at each upsampling
    d_filters: int = 32           # D channels after its first layer; doubled at each downsampling
    kernel: int = 4               # convolution kernel side (a multiple of the stride 2 avoids checkerboards)
    upsample: Literal["transpose", "resize-nearest", "resize-bilinear"] = "transpose"
    output_kernel: int = 0        # > 0: the last upsampling keeps BN + ReLU and a stride-1 convolution of
                                  # this kernel makes the patch (it can filter out periodic artefacts)
    output_filter: int = 0        # > 0 (odd): a last isotropic N×N filter, starting as the identity, that can
                                  # shape the spectrum finely (acoustic peaks the 3×3 convolutions smooth out)
    output: Literal["tanh", "linear"] = "tanh"
    d_batchnorm: bool = True      # BatchNorm in D (never on its first layer)
    bn_momentum: float = 0.9      # moving-average momentum of every BatchNorm
    leaky_slope: float = 0.2
    d_minibatch_std: bool = False  # D's last map gets one more channel: how much its batch's features scatter
    d_spectral_norm: bool = False  # spectral normalisation of D's convolutions and logit (Miyato et al. 2018)
    output_beam: float = 0.0      # > 0: a fixed Gaussian last filter of this FWHM in pixels (the instrument's
                                  # beam): G makes the sky, the beam smooths it like the real patches' beam did
    ring_gains: bool = False      # G's last linear step before the beam: a learned gain per Fourier ring of the
                                  # patch (its isotropic transfer function), applied to the mirrored patch
    ring_gain_rate: float = 1.0   # the ring gains learn this many times faster: a gain is exp(rate × weight), and
                                  # Adam moves a weight about one learning rate per step whatever its gradient
    output_zero_sum: bool = False  # G's last convolution (output_kernel) starts with taps that sum to 0, so the
                                  # positive mean of the ReLU maps it reads is no offset common to every patch
    d_spectrum: int = 0           # > 0: D also reads the patch's log ring powers (Hann window) through a dense
                                  # layer of this width, beside its convolutions (no BatchNorm on that path)
    noise_inputs: bool = False    # each upsampled map of G gets one more input, a map of white noise scaled per
                                  # channel (Karras et al. 2019); the noise is part of G's latent vector
    margin: int = 0               # > 0: G makes a canvas this many pixels wider on every side and its centre is
                                  # the patch: no pixel of the patch is next to G's zero-padded borders
    crop: Literal["centre", "random"] = "centre"  # with a margin, where the patch is cut from the canvas;
                                  # random: anywhere, drawn from two more latent numbers (``RandomCrop``)
    crop_reach: Optional[int] = None  # crop random: the patch moves at most this many pixels from the canvas
                                  # centre (None: the whole margin), keeping it off the canvas's borders
    g_padding: Literal["zero", "reflect", "wrap"] = "zero"  # how G's stride-1 convolutions see past the canvas
                                  # edge: zeros (a border G can draw a frame along), its mirror image, or the far
                                  # side (wrap: convolutions, ring gains and beam on a torus)

    def __post_init__(self):
        """Refuse sizes that cannot make a network, naming the key (before any work)."""
        if min(self.latent_dim, self.base_size, self.g_filters, self.d_filters, self.kernel) < 1 or \
                self.output_kernel < 0:
            raise UserError("model.latent_dim, base_size, g_filters, d_filters and kernel must be >= 1 and "
                            "model.output_kernel >= 0")
        if not 0 <= self.margin < self.image_size // 2:
            raise UserError(f"model.margin must be >= 0 and below model.image_size / 2, got {self.margin}; e.g. 8 "
                            f"with base_size 5 for 64-pixel patches (a canvas of 80 = 5·2^4)")
        if self.crop == "random" and not self.margin:  # crop's values are checked where the config is read
            raise UserError("model.crop 'random' needs model.margin > 0 (the canvas to cut from): set a margin, "
                            "e.g. 8 with base_size 5, or crop: centre")
        if self.crop_reach is not None and not (self.crop == "random" and 1 <= self.crop_reach <= self.margin):
            raise UserError(f"model.crop_reach must be 1 … model.margin ({self.margin}) with crop 'random', got "
                            f"{self.crop_reach}; e.g. 4, or leave it out (the whole margin)")
        hidden = hidden_upsamplings(self)
        if self.g_filters >> hidden < 1:
            raise UserError(f"model.g_filters {self.g_filters} is too small for {hidden} halvings; use at least "
                            f"{2 ** hidden}")
        if self.output_filter and (self.output_filter < 0 or self.output_filter % 2 == 0 or
                                   self.output_filter >= self.image_size):
            raise UserError(f"model.output_filter must be 0 or an odd size below model.image_size "
                            f"{self.image_size}, got {self.output_filter}; e.g. 25")
        if not 0 <= self.output_beam < self.image_size / 4:
            raise UserError(f"model.output_beam (FWHM, pixels) must be >= 0 and below model.image_size / 4, got "
                            f"{self.output_beam}; e.g. 2.5 for a 10' beam on 4' pixels")
        if not self.ring_gain_rate > 0:
            raise UserError(f"model.ring_gain_rate must be > 0 (1: the ring gains learn at the learning rate), got "
                            f"{self.ring_gain_rate}")
        if self.output_zero_sum and not self.output_kernel:
            raise UserError("model.output_zero_sum needs model.output_kernel > 0 (the last stride-1 convolution it "
                            "starts at zero sum): set output_kernel: 3, or output_zero_sum: false")
        if self.g_padding != "zero" and self.upsample == "transpose":
            raise UserError(f"model.g_padding '{self.g_padding}' needs upsample resize-nearest or resize-bilinear "
                            f"(transposed convolutions pad with zeros), got {self.upsample}; or set g_padding: zero")
        if self.g_padding == "wrap" and not self.margin:
            raise UserError("model.g_padding 'wrap' needs a margin > 0 (a whole torus as the patch would be a "
                            "periodic sky): set margin: 8 with base_size 5, or g_padding: reflect")
        if not (0 <= self.bn_momentum < 1 and self.leaky_slope >= 0):
            raise UserError(f"model.bn_momentum must be in [0, 1) and model.leaky_slope >= 0, got "
                            f"{self.bn_momentum} and {self.leaky_slope}")


def canvas(cfg: ModelConfig) -> int:
    """Side of G's last map: the patch and ``margin`` pixels on every side."""
    return cfg.image_size + 2 * cfg.margin


def upsamplings(cfg: ModelConfig) -> int:
    """How many stride-2 layers take ``base_size`` to G's canvas (D: the patch down to about ``base_size``)."""
    side = canvas(cfg)
    ratio = side / cfg.base_size
    k = round(math.log2(ratio)) if ratio >= 2 else 0
    if k < 1 or cfg.base_size * 2 ** k != side:
        what = f"model.image_size {cfg.image_size}" + (f" + 2 × model.margin = {side}" if cfg.margin else "")
        raise UserError(f"{what} is not model.base_size {cfg.base_size} times a power of 2 (>= 2); pick sizes "
                        f"such as 64 = 4·2^4, or margin 8 and base_size 5 (80 = 5·2^4)")
    if cfg.image_size % 2 ** k:
        raise UserError(f"model.image_size {cfg.image_size} must be a multiple of 2^{k} for D's {k} strided layers")
    return k


def hidden_upsamplings(cfg: ModelConfig) -> int:
    """G's upsamplings followed by BatchNorm + ReLU: all of them with ``output_kernel``, else all but the last."""
    k = upsamplings(cfg)
    return k if cfg.output_kernel else k - 1


def noise_sides(cfg: ModelConfig) -> list[int]:
    """Sides of G's maps that get a noise input (``model.noise_inputs``): each upsampled map with BN + ReLU."""
    if not cfg.noise_inputs:
        return []
    return [cfg.base_size * 2 ** (i + 1) for i in range(hidden_upsamplings(cfg))]


def input_dim(cfg: ModelConfig) -> int:
    """Length of G's latent vector: ``latent_dim``, one value per pixel of each noise map (``noise_sides``), and
    with ``crop: random`` two that place the patch on the canvas."""
    return cfg.latent_dim + sum(side * side for side in noise_sides(cfg)) + (2 if cfg.crop == "random" else 0)


def _init():
    return tf.keras.initializers.RandomNormal(0.0, 0.02)


class ZeroSum(tf.keras.initializers.Initializer):
    """N(0, 0.02) convolution kernels [h, w, in, out], less their mean over taps and input channels.

    G's last convolution reads ReLU maps, whose mean is positive (about 0.4 of their σ
    after BatchNorm). With the paper's N(0, 0.02) taps that mean times the kernel's sum is
    an offset common to every patch, from 9 % to 72 % of G's initial pixel variance
    depending on the seed; D spots it at once, wins outright for the first thousand steps
    and G in 2 seeds of 3 trained far worse (docs/gan.md). Taps that sum to 0 make no offset.
    """

    def __call__(self, shape, dtype=None, **kwargs):
        w = tf.random.normal(shape, 0.0, 0.02, dtype=dtype or tf.float32)
        return w - tf.reduce_mean(w, axis=[0, 1, 2], keepdims=True)


def build_generator(cfg: ModelConfig):
    """z float32 [N, input_dim(cfg)] → patches float32 [N, image_size, image_size] (network units).

    z's first ``latent_dim`` values feed the dense layer; with ``noise_inputs``, the next are
    the noise maps of ``noise_sides``, smallest first, row by row; with ``crop: random``, the
    last two place the patch on the canvas.
    """
    k, hidden = upsamplings(cfg), hidden_upsamplings(cfg)
    channels = cfg.g_filters  # enough for the halvings: ModelConfig checked it
    latent = tf.keras.Input((input_dim(cfg),), name="z")
    sides = noise_sides(cfg)
    place = [2] if cfg.crop == "random" else []
    z, *noise = tf.split(latent, [cfg.latent_dim, *[s * s for s in sides], *place], axis=1) \
        if sides or place else (latent,)
    x = layers.Dense(cfg.base_size ** 2 * channels, use_bias=False, kernel_initializer=_init(), name="project")(z)
    x = layers.BatchNormalization(momentum=cfg.bn_momentum, name="project_bn")(x)
    x = layers.ReLU(name="project_relu")(x)
    x = layers.Reshape((cfg.base_size, cfg.base_size, channels), name="to_map")(x)
    for i in range(hidden):
        channels //= 2
        x = _upsample(x, cfg, channels, f"up{i}", bias=False)
        if sides:
            x = NoiseInput(name=f"up{i}_noise")([x, noise[i]])
        x = layers.BatchNormalization(momentum=cfg.bn_momentum, name=f"up{i}_bn")(x)
        x = layers.ReLU(name=f"up{i}_relu")(x)
    if cfg.output_kernel:
        start = ZeroSum() if cfg.output_zero_sum else _init()
        x = _conv(x, cfg, 1, cfg.output_kernel, start, True, "to_patch")
    else:
        x = _upsample(x, cfg, 1, f"up{k - 1}", bias=True)
    if cfg.output_filter:
        x = IsotropicFilter(cfg.output_filter, name="spectrum_filter")(x)
    if cfg.ring_gains:
        x = RingGains(canvas(cfg), cfg.ring_gain_rate, torus=cfg.g_padding == "wrap", name="ring_gains")(x)
    if cfg.output == "tanh":
        x = layers.Activation("tanh", name="tanh")(x)
    if cfg.output_beam:
        x = Beam(cfg.output_beam, torus=cfg.g_padding == "wrap", name="beam")(x)
    if cfg.crop == "random":
        x = RandomCrop(cfg.image_size, cfg.margin if cfg.crop_reach is None else cfg.crop_reach,
                       name="crop")([x, noise.pop()])
    elif cfg.margin:
        x = layers.Cropping2D(cfg.margin, name="crop")(x)
    out = layers.Reshape((cfg.image_size, cfg.image_size), name="patch")(x)
    return tf.keras.Model(latent, out, name="generator")


def _upsample(x, cfg: ModelConfig, channels: int, name: str, bias: bool):
    """Double the map's side: a stride-2 transposed convolution, or resize + convolution."""
    if cfg.upsample == "transpose":
        return layers.Conv2DTranspose(channels, cfg.kernel, strides=2, padding="same", use_bias=bias,
                                      kernel_initializer=_init(), name=name)(x)
    x = layers.UpSampling2D(2, interpolation=cfg.upsample.split("-")[1], name=f"{name}_resize")(x)
    return _conv(x, cfg, channels, cfg.kernel, _init(), bias, name)


def _conv(x, cfg: ModelConfig, channels: int, kernel: int, start, bias: bool, name: str):
    """A stride-1 convolution of G that keeps the map's side, padded as ``g_padding`` says."""
    if cfg.g_padding == "zero":
        return layers.Conv2D(channels, kernel, padding="same", use_bias=bias, kernel_initializer=start, name=name)(x)
    x = Pad((kernel - 1) // 2, kernel // 2, cfg.g_padding, name=f"{name}_pad")(x)  # where "same" pads its zeros
    return layers.Conv2D(channels, kernel, padding="valid", use_bias=bias, kernel_initializer=start, name=name)(x)


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


class MinibatchStd(layers.Layer):
    """float32 [B, h, w, C] → [B, h, w, C + 1]: the batch's mean feature scatter as one more channel.

    After Karras et al. 2018 (ProGAN). D scores real and generated batches apart, so this
    channel shows it how much the patches of each batch differ from one another: the
    generated patches' loudness over ℓ ≈ 580–1260 varied twice as much as the real ones',
    which a patch seen alone barely shows.
    """

    def call(self, x):
        std = tf.sqrt(tf.math.reduce_variance(x, axis=0) + 1e-8)
        scatter = tf.reduce_mean(std) * tf.ones_like(x[..., :1])
        return tf.concat([x, scatter], axis=-1)


def build_discriminator(cfg: ModelConfig):
    """patches float32 [N, image_size, image_size] (network units) → logit float32 [N, 1]."""
    k = upsamplings(cfg)
    image = tf.keras.Input((cfg.image_size, cfg.image_size), name="patch")
    x = layers.Reshape((cfg.image_size, cfg.image_size, 1), name="to_map")(image)
    channels = cfg.d_filters
    for i in range(k):
        x = _normed(cfg, layers.Conv2D(channels, cfg.kernel, strides=2, padding="same",
                                       use_bias=not (cfg.d_batchnorm and i), kernel_initializer=_init(),
                                       name=f"down{i}"))(x)
        if cfg.d_batchnorm and i:
            x = layers.BatchNormalization(momentum=cfg.bn_momentum, name=f"down{i}_bn")(x)
        x = layers.LeakyReLU(cfg.leaky_slope, name=f"down{i}_lrelu")(x)
        channels *= 2
    if cfg.d_minibatch_std:
        x = MinibatchStd(name="minibatch_std")(x)
    x = layers.Flatten(name="flatten")(x)
    if cfg.d_spectrum:
        s = RingSpectrum(cfg.image_size, name="ring_spectrum")(image)
        s = layers.Dense(cfg.d_spectrum, kernel_initializer=_init(), name="spectrum_dense")(s)
        x = layers.Concatenate(name="with_spectrum")([x, layers.LeakyReLU(cfg.leaky_slope, name="spectrum_lrelu")(s)])
    logit = _normed(cfg, layers.Dense(1, kernel_initializer=_init(), name="logit"))(x)
    return tf.keras.Model(image, logit, name="discriminator")


class RingSpectrum(layers.Layer):
    """patches float32 [B, s, s] → float32 [B, s/2 + 1]: log10 of each ring's mean power (Hann window, mean removed).

    D's convolutions see a patch through BatchNorm, which takes out whatever a whole batch
    shares, such as a few per cent too much power in one ring; this path hands D the
    patch's own power spectrum (``science.rings``), with no normalisation in between.
    """

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = size
        self.window = tf.constant(rings.window(size), tf.float32)
        self.matrix = tf.constant(rings.ring_matrix(size, size // 2), tf.float32)

    def call(self, x):
        x = (x - tf.reduce_mean(x, axis=[1, 2], keepdims=True)) * self.window
        f = tf.signal.fft2d(tf.complex(x, tf.zeros_like(x)))
        power = tf.reshape(tf.math.real(f * tf.math.conj(f)), [-1, self.size * self.size])
        return tf.math.log(tf.matmul(power, self.matrix) + 1e-12) / math.log(10.0)

    def get_config(self):
        return {**super().get_config(), "size": self.size}


def _normed(cfg: ModelConfig, layer):
    """``layer``, spectrally normalised (one power iteration per training call) when ``model.d_spectral_norm``."""
    if not cfg.d_spectral_norm:
        return layer
    return SpectralNorm(layer, power_iterations=1, name=f"{layer.name}_sn")


class SpectralNorm(layers.SpectralNormalization):
    """Keras's spectral normalisation without its Python test on a tensor, so it runs inside ``tf.function``.

    Each training call does one power iteration on the kernel reshaped to [fan_in, out]
    and divides the kernel by its largest singular value, in place (as Keras does).
    """

    def normalize_weights(self):
        weights = tf.reshape(self.kernel, [-1, self.kernel_shape[-1]])
        v = tf.stop_gradient(tf.math.l2_normalize(tf.matmul(self.vector_u, weights, transpose_b=True)))
        u = tf.stop_gradient(tf.math.l2_normalize(tf.matmul(v, weights)))
        sigma = tf.matmul(tf.matmul(v, weights), u, transpose_b=True)
        self.vector_u.assign(u)
        self.kernel.assign(tf.reshape(self.kernel / tf.maximum(sigma, 1e-12), self.kernel_shape))


def moving_statistics(model) -> list:
    """The BatchNorm moving means and variances of ``model`` (non-trainable, per-rank in training)."""
    return [v for v in model.non_trainable_variables if "moving_" in v.name]
