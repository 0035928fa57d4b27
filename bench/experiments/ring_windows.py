"""The referee's rings test with other windows: calibration and power on tests/unit/test_referee.py's pool.

    python bench/experiments/ring_windows.py MODE [DRAWS]

MODE: ``new`` (the shipped estimator: Tukey, cosine edges over half the side), ``hann`` (the
rings test's window before 2026-12-04), ``flat`` (no window), ``flatx`` (no window, axis
modes dropped), ``tukeyA`` (scipy's periodic Tukey window of fraction A, e.g. tukey0.5).
Prints the per-test real-against-real pass rates over DRAWS draws (default 2000) and the
share of 200 draws in which a 5 % boost of ring k = 3, 5, 8, 11, 14 fails the rings test.
Figures of 2026-12-04 in docs/sampling.md. About 3 minutes per mode.
"""
import dataclasses
import sys
from pathlib import Path

import numpy as np
from scipy.signal import windows

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "unit"))
import test_referee as T  # noqa: E402  (the pool, draws and perturbations the unit tests use)
from cosmotrain.science import referee_features as rf  # noqa: E402

MODE = sys.argv[1]
SHIPPED_FEATURES, SHIPPED_PROBE = rf.features, rf.make_probe


def taper(n: int) -> np.ndarray:
    if MODE == "hann":
        return np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2
    if MODE.startswith("tukey"):
        return windows.tukey(n, float(MODE[5:]), sym=False)
    return np.ones(n)


def ring_powers(x: np.ndarray) -> np.ndarray:
    """|rfft2|² of each patch under the MODE window, window-weighted mean removed: [N, modes]."""
    x = np.asarray(x, np.float64)
    w = np.outer(taper(x.shape[1]), taper(x.shape[2]))
    mean = (x * w).sum(axis=(1, 2)) / w.sum()
    return (np.abs(np.fft.rfft2((x - mean[:, None, None]) * w)) ** 2).reshape(len(x), -1)


def without_axes(shape: tuple, matrix: np.ndarray) -> np.ndarray:
    ky, kx = np.fft.fftfreq(shape[0]) * shape[0], np.fft.rfftfreq(shape[1]) * shape[1]
    keep = ((ky[:, None] != 0) & (kx[None, :] != 0)).ravel()
    m = matrix * keep[:, None]
    return m / m.sum(axis=0)


def make_probe(reference, reso):
    probe = SHIPPED_PROBE(reference, reso)
    if MODE == "new":
        return probe
    matrix = without_axes(probe.shape, probe.ring_matrix) if MODE == "flatx" else probe.ring_matrix
    return dataclasses.replace(probe, ring_matrix=matrix, ring_ref=(ring_powers(reference) @ matrix).mean(axis=0))


def features(patches, probe):
    rows = SHIPPED_FEATURES(patches, probe)
    if MODE != "new":
        rows[:, probe.columns["ring"]] = ring_powers(patches) @ probe.ring_matrix / probe.ring_ref
    return rows


rf.features, rf.make_probe = features, make_probe
pool = T.Pool()
results = [pool.referee(r, s) for r, s in T._draws(int(sys.argv[2]) if len(sys.argv) > 2 else 2000, 1)]
per_test, whole = T._rates(results)
print(MODE, "real against real:", {k: round(v, 4) for k, v in per_test.items()}, "whole", whole, flush=True)
for k in (3, 5, 8, 11, 14):
    print(MODE, "5 % boost of ring", k, "fails", T._power(pool, T._ring_boost(pool.patches, k, 1.05), "ring", "rings"),
          flush=True)
