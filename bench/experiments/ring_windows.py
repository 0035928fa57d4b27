"""The referee's rings test with other windows: calibration and power on tests/unit/test_referee.py's pool.

    python bench/experiments/ring_windows.py MODE [DRAWS] [dft|sky]

MODE: ``new`` (the shipped estimator: each ring read twice, from the interior Laplacian
under a Tukey window with cosine edges over half the side, and from the patch's periodic
component × the periodic Laplacian without a window),
``hann`` (the rings test's window before 2026-12-04), ``flat`` (no window), ``flatx`` (no
window, axis modes dropped), ``tukeyA`` (scipy's periodic Tukey window of fraction A, e.g.
tukey0.5: the rings test of 2026-12-04 to 12-05), ``laptukeyA`` (laptukey0.5: the rings
test of 2026-12-05 morning), ``lapflat``, ``gradtukeyA`` (the same after a 5-point
Laplacian or on the two first differences: prewhitened). Prints the per-test
real-against-real pass rates over DRAWS draws (default 2000), then the share of 200 draws
in which the rings test fails a 5 % boost and a 5 % cut of each ring k = 2 … 15, made
either on the patches' own Fourier grid (``dft``, as tests/unit/test_referee.py; default)
or in the sky's C_ℓ over the ring's ℓ range, the skies synthesised again (``sky``). Figures
in docs/sampling.md. About 4 (dft) or 8 (sky) minutes per mode.
"""
import sys
from pathlib import Path

import numpy as np
from scipy.signal import windows

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "unit"))
import test_referee as T  # noqa: E402  (the pool, draws and perturbations the unit tests use)
from cosmotrain.data import sky as skies  # noqa: E402
from cosmotrain.science import referee_features as rf  # noqa: E402

MODE = sys.argv[1]


def taper(n: int) -> np.ndarray:
    if MODE == "hann":
        return np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2
    if "tukey" in MODE:
        return windows.tukey(n, float(MODE.split("tukey")[1]), sym=False)
    return np.ones(n)


def prewhitened(x: np.ndarray) -> list[np.ndarray]:
    """The 5-point Laplacian (``lap…``) or the two first differences (``grad…``) of each patch."""
    if MODE.startswith("lap"):
        return [rf.laplacian(x)]
    return [x[:, 1:, 1:] - x[:, :-1, 1:], x[:, 1:, 1:] - x[:, 1:, :-1]]


def mode_powers(x: np.ndarray) -> np.ndarray:
    """|rfft2|² of each patch under the MODE window, window-weighted mean removed: [N, modes]."""
    x = np.asarray(x, np.float64)
    if MODE.startswith(("lap", "grad")):  # prewhitened, zero-padded back to the patch's Fourier grid
        total = 0.0
        for y in prewhitened(x):
            w = np.outer(taper(y.shape[1]), taper(y.shape[2]))
            total = total + np.abs(np.fft.rfft2(y * w, s=x.shape[1:])) ** 2
        return total.reshape(len(x), -1)
    w = np.outer(taper(x.shape[1]), taper(x.shape[2]))
    mean = (x * w).sum(axis=(1, 2)) / w.sum()
    return (np.abs(np.fft.rfft2((x - mean[:, None, None]) * w)) ** 2).reshape(len(x), -1)


def without_axes(shape: tuple, matrix: np.ndarray) -> np.ndarray:
    ky, kx = np.fft.fftfreq(shape[0]) * shape[0], np.fft.rfftfreq(shape[1]) * shape[1]
    keep = ((ky[:, None] != 0) & (kx[None, :] != 0)).ravel()
    m = matrix * keep[:, None]
    return m / m.sum(axis=0)


def ring_powers(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """One reading per ring, [N, R], in place of the shipped two."""
    return mode_powers(x) @ (without_axes(x.shape[1:], matrix) if MODE == "flatx" else matrix)


def sky_boost(pool, k: int, factor: float) -> np.ndarray:
    """The pool's patches with the sky's C_ℓ × ``factor`` over ring k's ℓ range, synthesised again."""
    ell = np.arange(len(pool.map_cl))
    fundamental = 360 * 60 / (T.SHAPE[0] * T.RESO)
    cl = np.where((ell >= k * fundamental) & (ell < (k + 1) * fundamental), pool.map_cl * factor, pool.map_cl)
    where = skies.patch_locations(skies.patch_centers(8), T.SHAPE, T.RESO)
    out = pool.patches.copy()
    for i in range(T.TRAIN_SKIES, T.N_SKIES):  # the training skies stay as they are
        out[i] = skies.simulate_patches(cl, where, T.SHAPE, T.RESO, 0.0, 77, i)
    return out


if MODE != "new":
    rf.ring_powers = ring_powers
pool = T.Pool()
results = [pool.referee(r, s) for r, s in T._draws(int(sys.argv[2]) if len(sys.argv) > 2 else 2000, 1)]
per_test, whole = T._rates(results)
print(MODE, "real against real:", {k: round(v, 4) for k, v in per_test.items()}, "whole", whole, flush=True)
KIND = sys.argv[3] if len(sys.argv) > 3 else "dft"
for k in range(2, T.SHAPE[0] // 2):
    for factor in (1.05, 0.95):
        patches = T._ring_boost(pool.patches, k, factor) if KIND == "dft" else sky_boost(pool, k, factor)
        print(MODE, KIND, f"ring {k} x {factor} fails", T._power(pool, patches, "ring", "rings"), flush=True)
