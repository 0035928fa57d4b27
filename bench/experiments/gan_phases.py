"""Is G's excess in the rings test power, or structure? G ÷ training skies, ring by ring, three ways.

    python bench/experiments/gan_phases.py RUN DATASET [best|latest] [N]

Reads N (default 2048) training patches and N samples of the run's checkpoint, and prints,
for rings 20 … Nyquist one fundamental wide, generated ÷ real mean power of the patches'
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
from cosmotrain.science import rings, spectra


def windowed(patches: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Mean ring powers of the Tukey-windowed Laplacian of the interior (the rings test's first reading)."""
    lap = rf.laplacian(patches)
    taper = spectra.apodization_window(lap.shape[1:], "tukey", rf.RING_TAPER)
    power = np.abs(np.fft.fft2(lap * taper, s=patches.shape[1:])) ** 2
    return (power.reshape(len(patches), -1) @ matrix).mean(axis=0)


def periodic(patches: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Mean ring powers of the periodic component's Laplacian, every mode on its own (the second reading)."""
    k = 2 * np.pi * np.fft.fftfreq(patches.shape[-1])
    transfer = (4 - 2 * np.cos(k)[:, None] - 2 * np.cos(k)[None, :]) ** 2
    power = np.abs(np.fft.fft2(rf.periodic_component(patches))) ** 2 * transfer
    return (power.reshape(len(patches), -1) @ matrix).mean(axis=0)


def scrambled(patches: np.ndarray, seed: int) -> np.ndarray:
    """The periodic component of each patch with random Fourier phases: the same power in every mode."""
    rng = np.random.default_rng(seed)
    phases = np.fft.fft2(rng.standard_normal(patches.shape))
    return np.fft.ifft2(np.fft.fft2(rf.periodic_component(patches)) * phases / np.abs(phases)).real


def main(run: str, data: str, which: str = "best", n: str = "2048") -> None:
    train = ShardSet(data, "train", kind="cmb")
    real = train.read(0, min(train.n, int(n)), ("patches",))["patches"].astype(np.float64)
    made = load_generator(run, which).sample(len(real), seed=7).astype(np.float64)
    size = real.shape[-1]
    matrix = rings.ring_matrix(size, size // 2)
    readings = {"windowed (rings test)": lambda p, s: windowed(p, matrix),
                "windowed, phases scrambled": lambda p, s: windowed(scrambled(p, s), matrix),
                "periodic (rings test)": lambda p, s: periodic(p, matrix)}
    print("rings", " ".join(f"{k:4d}" for k in range(20, size // 2 + 1)))
    for name, read in readings.items():
        with np.errstate(invalid="ignore", divide="ignore"):  # ring 0 has no Laplacian power
            ratio = read(made, 1) / read(real, 2)
        print(f"{name:27s}", " ".join(f"{r:.2f}" for r in ratio[20:]))


if __name__ == "__main__":
    main(*sys.argv[1:])
