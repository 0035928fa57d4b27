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
side must be ``base_size · 2^k``. G's layers beyond convolutions (padding, noise inputs, the
crop, ring gains, output filter, beam) are in ``models.g_layers``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal, Optional

import tensorflow as tf
from tensorflow.keras import layers

from cosmotrain.errors import UserError
from cosmotrain.models.g_layers import Beam, IsotropicFilter, NoiseInput, Pad, RandomCrop, RingGains, SignFlip
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
    sign_flip: bool = False       # G's patch is negated when one more latent number is negative: its samples are
                                  # symmetric under T → −T, as a Gaussian sky's are (``SignFlip``)
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
    with ``crop: random`` two that place the patch on the canvas, with ``sign_flip`` one whose sign is the patch's."""
    return cfg.latent_dim + sum(side * side for side in noise_sides(cfg)) + (2 if cfg.crop == "random" else 0) + \
        int(cfg.sign_flip)


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
    next two place the patch on the canvas; with ``sign_flip`` the last one sets its sign.
    """
    k, hidden = upsamplings(cfg), hidden_upsamplings(cfg)
    channels = cfg.g_filters  # enough for the halvings: ModelConfig checked it
    latent = tf.keras.Input((input_dim(cfg),), name="z")
    sides = noise_sides(cfg)
    place, flip = [2] if cfg.crop == "random" else [], [1] if cfg.sign_flip else []
    z, *noise = tf.split(latent, [cfg.latent_dim, *[s * s for s in sides], *place, *flip], axis=1) \
        if sides or place or flip else (latent,)
    sign = noise.pop() if flip else None
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
    if flip:
        x = SignFlip(name="sign")([x, sign])
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
