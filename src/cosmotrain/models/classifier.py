"""The galaxy classifier: a small CNN (convolution + pooling blocks, then dense layers).

Input: uint8 images [B, H, W, 3] as stored in the galaxies dataset (scaled to [0, 1] inside
the model, so evaluation and inference feed raw pixels). Output: softmax probabilities
float32 [B, n_classes] over (round, edge-on, spiral).
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import tensorflow as tf

from cosmotrain.models.layers import StepDropout


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The ``model`` section: one convolution block per entry of ``filters``.

    Each block is ``convs_per_block`` convolutions of ``kernel_size`` (same padding, optional
    BatchNorm before the activation) and a 2x2 pooling; then the feature map is flattened
    (or globally averaged) and goes through the ``dense`` layers, each followed by dropout.
    ``batch_norm_momentum`` is the BatchNorm moving statistics' momentum: they forget their
    start in about 1 / (1 - momentum) steps, and evaluation uses them.
    """

    filters: tuple[int, ...] = (32, 64, 128)
    convs_per_block: int = 1
    kernel_size: int = 3
    pool: Literal["max", "avg"] = "max"
    head: Literal["flatten", "global_avg"] = "flatten"
    dense: tuple[int, ...] = (128,)
    dropout: float = 0.3
    batch_norm: bool = False
    batch_norm_momentum: float = 0.99
    activation: str = "relu"

    def __post_init__(self):
        """Refuse settings that cannot work, naming the key to change (the image size is checked when built)."""
        from cosmotrain.config import ConfigError

        if not self.filters or min(self.filters) < 1 or (self.dense and min(self.dense) < 1):
            raise ConfigError(f"model.filters must be a non-empty list of positive widths and model.dense a list of "
                              f"positive widths, got {list(self.filters)} and {list(self.dense)}")
        if self.convs_per_block < 1 or self.kernel_size < 1:
            raise ConfigError(f"model.convs_per_block and model.kernel_size must be >= 1, got "
                              f"{self.convs_per_block} and {self.kernel_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.batch_norm_momentum < 1.0:
            raise ConfigError(f"model.batch_norm_momentum must be in (0, 1), got {self.batch_norm_momentum}")
        try:
            tf.keras.activations.get(self.activation)
        except ValueError:
            raise ConfigError(f"model.activation '{self.activation}' is not a Keras activation; try relu, elu, "
                              f"gelu") from None


def build_classifier(cfg: ModelConfig, image_shape: tuple, n_classes: int = 3) -> tf.keras.Model:
    """The CNN for images of ``image_shape`` (H, W, C); softmax over ``n_classes``."""
    _check(cfg, image_shape)
    images = tf.keras.Input(image_shape, dtype=tf.uint8, name="images")
    x = tf.keras.layers.Rescaling(1.0 / 255.0, name="to_unit_range")(images)
    for i, width in enumerate(cfg.filters):
        x = _conv_block(x, cfg, width, i)
    x = tf.keras.layers.Flatten(name="flatten")(x) if cfg.head == "flatten" else \
        tf.keras.layers.GlobalAveragePooling2D(name="global_avg")(x)
    for i, units in enumerate(cfg.dense):
        x = tf.keras.layers.Dense(units, activation=cfg.activation, name=f"dense{i}")(x)
        x = StepDropout(cfg.dropout, name=f"dropout{i}")(x)
    probs = tf.keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return tf.keras.Model(images, probs, name="galaxy_cnn")


def _conv_block(x, cfg: ModelConfig, width: int, i: int):
    for j in range(cfg.convs_per_block):
        x = tf.keras.layers.Conv2D(width, cfg.kernel_size, padding="same", use_bias=not cfg.batch_norm,
                                   name=f"conv{i}_{j}")(x)
        if cfg.batch_norm:
            x = tf.keras.layers.BatchNormalization(momentum=cfg.batch_norm_momentum, name=f"bn{i}_{j}")(x)
        x = tf.keras.layers.Activation(cfg.activation, name=f"act{i}_{j}")(x)
    pool = tf.keras.layers.MaxPooling2D if cfg.pool == "max" else tf.keras.layers.AveragePooling2D
    return pool(2, name=f"pool{i}")(x)


def _check(cfg: ModelConfig, image_shape: tuple) -> None:
    """Refuse images too small for the configured pooling, naming the key to change."""
    from cosmotrain.config import ConfigError

    smallest = min(image_shape[0], image_shape[1])
    if smallest < 2 ** len(cfg.filters):
        raise ConfigError(f"{len(cfg.filters)} pooling blocks shrink {smallest}-pixel images below 1 pixel; "
                          f"use at most {max(1, smallest.bit_length() - 1)} entries in model.filters")
