"""A trained generator in physical units: latents in, CMB patches in μK out.

``Transform`` maps μK to the network's units and back (the training set's pixel mean and a
multiple of its σ); ``TrainedGenerator`` wraps a Keras generator with its transform and,
when the run fitted one, its calibration filter (``science.calibration``). Latent vectors
for sample i of a seed come from ``models.latents`` and depend on (seed, i) only, so a
sample set is the same whatever the batch, the rank or the rank count.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from cosmotrain.models.latents import latents
from cosmotrain.science import calibration

GENERATE_BATCH = 256


class Transform(NamedTuple):
    """μK ↔ network units: ``net = (uK - offset_uK) / scale_uK``."""

    offset_uK: float
    scale_uK: float

    @classmethod
    def fit(cls, patches: np.ndarray, sigmas: float) -> "Transform":
        """From training patches float [N, H, W] μK: offset = mean, scale = ``sigmas`` x σ."""
        x = np.asarray(patches, dtype=np.float64)
        return cls(float(x.mean()), float(sigmas * x.std()))

    def to_net(self, x):
        return (x - self.offset_uK) / self.scale_uK

    def to_uK(self, y):
        return y * self.scale_uK + self.offset_uK


class TrainedGenerator:
    """A trained generator: ``generator(z)`` maps latents float32 [N, latent_dim] to patches
    float32 [N, H, W] in μK; ``generator.sample(n, seed)`` draws the latents too.

    Inference mode (BatchNorm uses its moving statistics), so a patch depends on its own z
    only. ``model`` is the Keras generator (network units); ``gains`` the calibration filter's
    (``science.calibration``; None: G's patches as they are); ``checkpoint`` the restored
    prefix and ``sha256`` its digest (empty for a generator still training); ``info`` holds
    the image size, the transform, the gains, the training step and the training dataset's
    attributes under ``"dataset"`` (``reso_arcmin``, ...).
    """

    def __init__(self, generator, transform: Transform, checkpoint: str = "", info: dict | None = None,
                 gains=None, sha256: str = ""):
        self.model = generator
        self.latent_dim = int(generator.input_shape[-1])
        self.image_size = tuple(generator.output_shape[1:])
        self.transform, self.checkpoint, self.info, self.gains = transform, checkpoint, info or {}, gains
        self.sha256 = sha256
        spec = tf.TensorSpec((None, self.latent_dim), tf.float32)
        self._forward = tf.function(lambda z: generator(z, training=False), input_signature=[spec])

    def __call__(self, z: np.ndarray) -> np.ndarray:
        out = self.network(z)
        if self.gains is not None:
            out = calibration.apply(out, self.gains)
        return self.transform.to_uK(out.astype(np.float64)).astype(np.float32)

    def sample(self, n: int, seed: int = 0, start: int = 0) -> np.ndarray:
        """Patches ``start`` … ``start + n − 1`` of ``seed`` (float32 [n, H, W] μK), as ``sample gan --seed`` does."""
        return self(latents(seed, start, start + n, self.latent_dim))

    def network(self, z: np.ndarray) -> np.ndarray:
        """float32 [N, H, W]: G's own patches in network units, before the calibration filter."""
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"latents must be [N, {self.latent_dim}], got {z.shape}")
        net = [self._forward(z[i:i + GENERATE_BATCH]).numpy() for i in range(0, len(z), GENERATE_BATCH)]
        return np.concatenate(net) if net else np.zeros((0, *self.image_size), np.float32)
