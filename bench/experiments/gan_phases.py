"""Is G's excess in the rings test power, or structure? G ÷ training skies, ring by ring, three ways.

    python bench/experiments/gan_phases.py RUN DATASET [best|latest] [N]

Reads N (default 2048) training patches and N samples of the run's checkpoint, and prints,
for the rings test's rings from 20 fundamentals up (one fundamental wide), generated ÷ real mean power of the patches'
Laplacian as the referee's rings test reads it first (under its Tukey window), then the
same after each patch's Fourier phases were replaced by random ones (the power of every
mode kept: a stationary Gaussian field with G's spectrum), and the periodic reading
(every mode on its own, no window). A stationary field reads the same under any window;
where G's windowed ratio is above the other two, neighbouring modes of G's patches are
correlated: structure that is not in the spectrum.
"""
import sys

import numpy as np

from cosmotrain.data.reader import ShardSet
from cosmotrain.inference import load_generator
from cosmotrain.science import referee_features as rf
from cosmotrain.science import spectra


def scrambled(patches: np.ndarray, seed: int) -> np.ndarray:
    """The periodic component of each patch with random Fourier phases: the same power in every mode."""
    rng = np.random.default_rng(seed)
    phases = np.fft.fft2(rng.standard_normal(patches.shape))
    return np.fft.ifft2(np.fft.fft2(rf.periodic_component(patches)) * phases / np.abs(phases)).real


def main(run: str, data: str, which: str = "best", n: str = "2048") -> None:
    train = ShardSet(data, "train", kind="cmb")
    real = train.read(0, min(train.n, int(n)), ("patches",))["patches"].astype(np.float64)
    made = load_generator(run, which).sample(len(real), seed=7).astype(np.float64)
    matrix, ks = rf._ring_matrix(spectra.make_binning(real.shape[1:], float(train.attrs["reso_arcmin"])))
    mean = lambda p: rf.ring_powers(p, matrix).mean(axis=0)  # the rings test's two readings, side by side
    (made_w, made_p), (real_w, real_p) = np.split(mean(made), 2), np.split(mean(real), 2)
    readings = {"windowed (rings test)": made_w / real_w,
                "windowed, phases scrambled": mean(scrambled(made, 1))[:len(ks)] / mean(scrambled(real, 2))[:len(ks)],
                "periodic (rings test)": made_p / real_p}
    top = ks >= 20
    print(f"{'rings':27s}", " ".join(f"{k:4d}" for k in ks[top]))
    for name, ratio in readings.items():
        print(f"{name:27s}", " ".join(f"{r:4.2f}" for r in ratio[top]))


if __name__ == "__main__":
    main(*sys.argv[1:])
