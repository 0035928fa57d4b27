"""Latent vectors keyed by (seed, sample index): the same samples whatever the batch, the rank or the rank count."""
from __future__ import annotations

import numpy as np

LATENTS = "standard normal float32; NumPy Philox4x64 with key=seed, counter=i*2^64 for sample i"


def latents(seed: int, start: int, stop: int, dim: int) -> np.ndarray:
    """Standard-normal latent vectors of samples ``start:stop``: float32 [stop-start, dim].

    Row i is drawn from Philox4x64 with key ``seed`` and counter ``i·2^64``: it depends on
    (seed, i) only, never on the batch, the rank or the rank count.
    """
    out = np.empty((stop - start, dim), dtype=np.float32)
    for row, i in enumerate(range(start, stop)):
        bits = np.random.Philox(key=seed, counter=[0, i, 0, 0])
        out[row] = np.random.Generator(bits).standard_normal(dim)
    return out
