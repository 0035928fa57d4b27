"""Where G's small-scale power goes wrong: G ÷ training patches by ring, by reading and by direction.

    python bench/experiments/gan_directions.py RUN DATASET [best|latest] [N]

Reads N (default 2048) training patches and N samples of the run's checkpoint and prints,
ring by ring (one fundamental wide, from ring 12 up), generated ÷ real mean power of

* the patch under the Hann window (the spectrum term's reading);
* the Laplacian of its interior under the Hann window, under the Tukey window of the
  rings test and of ``rings.prewhitened``, and without a window (then real patches' top
  rings read mostly the leakage of the interior's edges: the last line prints that
  excess, real patches' unwindowed ÷ Tukey reading);

then, for bands of rings, the Hann reading split by each mode's direction folded onto 0°
(the grid axes) … 45° (the diagonals), in thirds (a sky has no preferred direction: real
patches read alike in every third, so the thirds' ratios show where G has put its
power); and last the Laplacian's power by distance from the interior's edge (a sky has
no preferred place either). Figures in docs/gan.md ("Why the rings come out high").
"""
import sys

import numpy as np

from cosmotrain.data.reader import ShardSet
from cosmotrain.inference import load_generator
from cosmotrain.science import referee_features as rf
from cosmotrain.science import rings, spectra

SIZE_TOP = 32  # rings 0 … 32 of a 64-pixel patch
DISTANCES = ((0, 2), (2, 4), (4, 8), (8, 16), (16, 31))  # pixels from the interior's edge
BANDS = ((8, 12), (12, 16), (16, 20), (20, 24), (24, 27), (27, 30), (30, 33))


def laplacian_rings(x: np.ndarray, taper: np.ndarray | None, matrix: np.ndarray) -> np.ndarray:
    """Ring powers of the interior Laplacian under ``taper`` (None: no window), zero-padded to the patch, per
    unit of the window's mean square (so that readings without leakage agree)."""
    taper = np.ones(rf.laplacian(x[:1]).shape[1:]) if taper is None else taper
    power = np.abs(np.fft.fft2(rf.laplacian(x) * taper, s=x.shape[1:])) ** 2
    return power.reshape(len(x), -1) @ matrix / np.mean(taper**2)


def readings(x: np.ndarray, matrix: np.ndarray) -> dict:
    side = x.shape[1] - 2
    return {"Hann": rings.patch_ring_powers(x, matrix),
            "Laplacian, Hann": laplacian_rings(x, rings.window(side), matrix),
            "Laplacian, Tukey": laplacian_rings(x, spectra.apodization_window((side, side), "tukey", rf.RING_TAPER),
                                                matrix),
            "Laplacian, none": laplacian_rings(x, None, matrix)}


def thirds(x: np.ndarray) -> np.ndarray:
    """Hann power summed per (band of rings, third of direction), mean over patches: float64 [bands, 3]."""
    third = np.minimum(rings.mode_directions(x.shape[1]) // 15, 2)
    ring = rings.mode_rings(x.shape[1])
    centred = x - x.mean(axis=(1, 2), keepdims=True)
    power = (np.abs(np.fft.fft2(centred * rings.window(x.shape[1]))) ** 2).mean(axis=0)
    return np.array([[power[(ring >= lo) & (ring < hi) & (third == t)].sum() for t in range(3)] for lo, hi in BANDS])


def by_distance(x: np.ndarray) -> np.ndarray:
    """Mean squared Laplacian per band of distance from the interior's edge (``DISTANCES``): float64 [bands]."""
    power = (rf.laplacian(x) ** 2).mean(axis=0)
    i = np.arange(power.shape[0])
    edge = np.minimum(i, i[::-1])
    distance = np.minimum(edge[:, None], edge[None, :])
    return np.array([power[(distance >= lo) & (distance < hi)].mean() for lo, hi in DISTANCES])


def main(run: str, data: str, which: str = "best", n: str = "2048") -> None:
    train = ShardSet(data, "train", kind="cmb")
    real = train.read(0, min(train.n, int(n)), ("patches",))["patches"].astype(np.float64)
    made = load_generator(run, which).sample(len(real), seed=7).astype(np.float64)
    matrix = rings.ring_matrix(real.shape[1], SIZE_TOP)
    ours, theirs = readings(made, matrix), readings(real, matrix)
    ks = np.arange(12, SIZE_TOP + 1)
    print(f"{'G / real, ring':26s}", " ".join(f"{k:5d}" for k in ks))
    for name in ours:
        ratio = ours[name].mean(axis=0) / theirs[name].mean(axis=0)
        print(f"{name:26s}", " ".join(f"{r:5.3f}" for r in ratio[ks]))
    excess = theirs["Laplacian, none"].mean(axis=0) / theirs["Laplacian, Tukey"].mean(axis=0)
    print(f"{'real: none / Tukey':26s}", " ".join(f"{r:5.3g}" for r in excess[ks]))
    print("\nG / real, Hann, by direction   axes (0-15°)   15-30°   diagonals (30-45°)")
    for (lo, hi), row in zip(BANDS, thirds(made) / thirds(real)):
        print(f"  rings {lo:2d}-{hi - 1:2d}                 " + "      ".join(f"{r:5.3f}" for r in row))
    print("\nG / real, Laplacian power by distance from the interior's edge")
    for (lo, hi), r in zip(DISTANCES, by_distance(made) / by_distance(real)):
        print(f"  {lo:2d}-{hi - 1:2d} pixels  {r:5.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
