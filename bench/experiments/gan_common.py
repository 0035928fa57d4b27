"""What every patch of G shares: the offset and the fixed pattern D can spot in one batch.

    python bench/experiments/gan_common.py RUN [CHECKPOINT]     # G's own weights (default: latest)
    python bench/experiments/gan_common.py RUN --init SEED ...  # G as the run's config builds it, per seed

For 1024 patches of G's own weights with BatchNorm in training mode (as D and the spectrum
term see them), prints the share of G's pixel variance in the offset common to every patch
and in the fixed pattern (the mean patch less its mean), the pattern's rms in the patch's
outer 8 pixels and its centre, and per ring the share of G's power the pattern holds. Real
skies share nothing but noise (1/1024 of the variance). In 1000-step screens of one config,
seed 4321, which trains badly, made a frame along the patch's edges (4 % of the variance,
14 % of the power above ring 16 at step 1000) where seed 1234 had none; at initialisation
the bad seeds' G (4321, 777) had an offset of 37 % and 72 % of its variance (1234: 8 %).
Figures in docs/gan.md ("What a bad seed makes").
"""
import sys

import numpy as np
import tensorflow as tf

from cosmotrain import config
from cosmotrain.inference import _checkpoint
from cosmotrain.models.dcgan import ModelConfig, build_generator, input_dim
from cosmotrain.models.latents import latents
from cosmotrain.science import rings

N, BATCH = 1024, 64


def report(name: str, generator, cfg: ModelConfig) -> None:
    z = latents(7, 0, N, input_dim(cfg))
    x = np.concatenate([generator(z[i:i + BATCH], training=True).numpy() for i in range(0, N, BATCH)])
    x = x.astype(np.float64)
    total, mean = np.mean(x ** 2), x.mean(axis=0)
    offset = mean.mean()
    pattern = mean - offset
    edge = np.ones_like(pattern, bool)
    edge[8:-8, 8:-8] = False
    matrix = rings.ring_matrix(x.shape[-1], x.shape[-1] // 2)
    own = (np.abs(np.fft.fft2(x - x.mean(axis=(1, 2), keepdims=True))) ** 2).reshape(N, -1) @ matrix
    shared = (np.abs(np.fft.fft2(pattern)) ** 2).reshape(-1) @ matrix
    print(f"{name}: offset {offset ** 2 / total:.3f} of the variance, pattern {np.mean(pattern ** 2) / total:.3f}; "
          f"pattern rms outer 8 px {np.sqrt(np.mean(pattern[edge] ** 2)):.3f}, centre "
          f"{np.sqrt(np.mean(pattern[~edge] ** 2)):.3f} (pixel rms {np.sqrt(total):.3f})")
    print("  pattern's share of each ring's power, rings 1, 3, …:",
          " ".join(f"{s:.2f}" for s in (shared / own.mean(axis=0))[1::2]))


def main(run: str, *args: str) -> None:
    init = bool(args) and args[0] == "--init"
    path, state = _checkpoint(run, args[0] if args and not init else "latest", "cmb-dcgan", "cosmotrain train gan")
    cfg = config.from_dict(ModelConfig, state.signature["model"])
    if init:
        for seed in args[1:]:
            tf.keras.utils.set_random_seed(int(seed))
            report(f"initial G, seed {seed}", build_generator(cfg), cfg)
        return
    generator = build_generator(cfg)
    tf.train.Checkpoint(generator=generator).restore(path).expect_partial()
    report(f"G's own weights, step {state.step}", generator, cfg)


if __name__ == "__main__":
    main(*sys.argv[1:])
