"""Per-patch signal-to-noise of one ring's power under the rings test's readings.

    python bench/experiments/ring_efficiency.py

For 6 skies of tests/unit/test_referee.py's patches (32x32 at 8', 20' beam) and rings
k = 2, 3, 4, 6, 10, 14: how far a 5 % boost of the ring on the patch's own Fourier grid
moves each reading (``sensitivity``, 1 = by exactly 5 %), the reading's mean ÷ standard
deviation over patches, and their product, the boost's signal-to-noise per patch (a
Gaussian field's ring of m independent modes allows √m: 2.83 at k = 2). Readings: the
shipped two (``rf.ring_powers``: ``unwindowed``, the periodic component × the periodic
Laplacian, and ``windowed``), the interior Laplacian zero-padded (``interior``, shipped
before) and the periodic component of the interior Laplacian (``interior_periodic``).
Under a minute. Figures in docs/sampling.md.
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "unit"))
import test_referee as T  # noqa: E402  (the sizes the unit tests use)
from cosmotrain.data import cmb_spectrum  # noqa: E402
from cosmotrain.data import sky as skies  # noqa: E402
from cosmotrain.science import referee_features as rf  # noqa: E402

MATRIX, KS = rf._ring_matrix(rf.spectra.make_binning(T.SHAPE, T.RESO))  # the referee's rings k = 2 …
ALTERNATIVES = {  # the patch's Fourier modes under readings the referee does not ship
    "interior": lambda x: np.fft.rfft2(rf.laplacian(x), s=x.shape[1:]),
    "interior_periodic": lambda x: np.fft.rfft2(rf.periodic_component(rf.laplacian(x)), s=x.shape[1:]),
}


def ring_power(x: np.ndarray, name: str, k: int) -> np.ndarray:
    """Each patch's power in ring k under reading ``name`` (the shipped two: ``rf.ring_powers``)."""
    j = int(np.flatnonzero(KS == k)[0])
    if name in ALTERNATIVES:
        return (np.abs(ALTERNATIVES[name](x)) ** 2).reshape(len(x), -1) @ MATRIX[:, j]
    return rf.ring_powers(x, MATRIX)[:, j + len(KS) * rf.RING_READINGS.index(name)]


def patches() -> np.ndarray:
    spectrum = cmb_spectrum.load_spectrum(cmb_spectrum.SpectrumConfig())
    map_cl = skies.map_spectrum(spectrum.cl, 1024, T.LMAX, T.FWHM, True)
    where = skies.patch_locations(skies.patch_centers(8), T.SHAPE, T.RESO)
    return np.concatenate([skies.simulate_patches(map_cl, where, T.SHAPE, T.RESO, 0.0, 77, i)
                           for i in range(6)]).astype(np.float64)


x = patches()
for k in (2, 3, 4, 6, 10, 14):
    boosted = T._ring_boost(x[None], k, 1.05)[0]
    for name in ("unwindowed", *ALTERNATIVES, "windowed"):
        plain, moved = ring_power(x, name, k), ring_power(boosted, name, k)
        sensitivity = (moved.mean() / plain.mean() - 1) / 0.05
        spread = plain.mean() / plain.std()
        print(f"k={k:2d} {name:18s} sensitivity {sensitivity:6.3f}  mean/sd {spread:5.3f}  "
              f"signal-to-noise {sensitivity * spread:6.3f}", flush=True)
