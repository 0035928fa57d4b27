"""Is G stationary across its patch and its canvas? Mean power per pixel by distance to the border.

    python bench/experiments/gan_canvas.py DATASET RUN [RUN ...]

A real sky is statistically the same everywhere; a patch with its mean removed is not quite
(the mean takes more from the centre's variance, which shares more large scales with the
rest). So G's patches are compared with the real ones, both with their mean removed: for
the training patches of DATASET, then for 2048 patches and 2048 canvases (G's map after its
beam, before the crop: ``model.margin``) of each run's final checkpoint (latents of seed 3),
prints the mean T² and the mean squared 5-point Laplacian (the small scales the rings test
reads) of the pixels at each distance from the nearest border (0 = the border row), over
their mean in the central 16 × 16 pixels. Figures in docs/gan.md ("A wider canvas").
"""
import sys

import numpy as np
import tensorflow as tf

from cosmotrain.data.reader import ShardSet
from cosmotrain.inference import load_generator
from cosmotrain.science.referee_features import laplacian

CANVASES, BATCH, CENTRE = 2048, 256, 8


def generated(run: str) -> tuple[np.ndarray, np.ndarray]:
    """float64 [CANVASES, side, side] twice: G's patches (μK) and canvases (network units)."""
    generator = load_generator(run, "latest")
    before_crop = tf.keras.Model(generator.model.input, generator.model.get_layer("beam").output)
    z = np.random.default_rng(3).standard_normal((CANVASES, generator.latent_dim)).astype(np.float32)
    c = np.concatenate([before_crop(z[i:i + BATCH], training=False).numpy()[..., 0]
                        for i in range(0, CANVASES, BATCH)])
    return generator(z).astype(np.float64), c.astype(np.float64)


def show(name: str, maps: np.ndarray) -> None:
    c = maps - maps.mean(axis=(1, 2), keepdims=True)
    lap = laplacian(c)
    print(f"{name} ({c.shape[-1]} px)")
    print("  T²         ", " ".join(f"{v:.2f}" for v in by_distance((c ** 2).mean(axis=0))))
    print("  Laplacian² ", " ".join(f"{v:.2f}" for v in by_distance((lap ** 2).mean(axis=0))))


def by_distance(power: np.ndarray) -> np.ndarray:
    """float64 [side // 2]: ``power`` [side, side] averaged over the pixels at each distance to the border."""
    i = np.arange(power.shape[0])
    edge = np.minimum(i, i[::-1])
    distance = np.minimum.outer(edge, edge)
    profile = np.array([power[distance == d].mean() for d in range(power.shape[0] // 2)])
    return profile / profile[-CENTRE:].mean()


def main(data: str, *runs: str) -> None:
    print(f"by distance to the border (0 = border row; T² from row 0, Laplacian² from row 1), "
          f"over the central {2 * CENTRE}×{2 * CENTRE}")
    train = ShardSet(data, "train", kind="cmb")
    show(f"{data}: training patches", train.read(0, train.n, ("patches",))["patches"].astype(np.float64))
    for run in runs:
        patches, canvas = generated(run)
        show(f"{run}: patches", patches)
        show(f"{run}: canvases", canvas)


if __name__ == "__main__":
    main(*sys.argv[1:])
