"""One-point and morphological statistics of batches of 2-D fields (CMB patches, GAN samples).

* pixel histograms on fixed bin edges: integer counts that add up across batches and ranks
  (``dist.allreduce_sum_array``), so a PDF over a whole sample set needs no gathering;
* the two-sample Kolmogorov–Smirnov distance between pixel values;
* Minkowski functionals V0 (area), V1 (boundary length), V2 (Euler characteristic) of the
  excursion sets {u > ν} at thresholds ν in units of σ, vectorised over the batch.

Fields are float arrays ``[N, H, W]`` (μK for CMB patches; any unit works). Pure NumPy.
"""
from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------- pixel PDF

def histogram_edges(sigma: float, n_sigma: float = 5.0, nbins: int = 100, mean: float = 0.0) -> np.ndarray:
    """``nbins + 1`` equal bins spanning ``mean ± n_sigma·sigma`` (same units as the fields)."""
    return np.linspace(mean - n_sigma * sigma, mean + n_sigma * sigma, nbins + 1)


def pixel_histogram(fields: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts (int64 ``[nbins]``) of all pixel values of ``fields`` in bins ``edges`` ``[nbins+1]``.

    Bin ``i`` holds ``edges[i] <= x < edges[i+1]``; values below the first edge are counted
    in the first bin and values at or above the last edge in the last bin, so no pixel is
    lost and counts of several batches (or ranks) simply add up. NaN is an error.
    """
    x = np.asarray(fields, dtype=np.float64).ravel()
    edges = np.asarray(edges, dtype=np.float64)
    if np.isnan(x).any():
        raise ValueError("pixel_histogram got NaN values")
    index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    return np.bincount(index, minlength=len(edges) - 1).astype(np.int64)


# ---------------------------------------------------------------- Kolmogorov–Smirnov

def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample KS distance ``max_x |F_a(x) − F_b(x)|`` between all pixel values of ``a`` and ``b``.

    Exact (empirical CDFs evaluated at every value); arrays of any shape. Pixels of a patch
    are correlated, so the classical p-value does not apply: compare ``D`` with the
    distance between two independent real samples of the same sizes.
    """
    x = np.sort(np.asarray(a, dtype=np.float64).ravel())
    y = np.sort(np.asarray(b, dtype=np.float64).ravel())
    if len(x) == 0 or len(y) == 0:
        raise ValueError("ks_distance needs two non-empty samples")
    points = np.concatenate([x, y])
    cdf_x = np.searchsorted(x, points, side="right") / len(x)
    cdf_y = np.searchsorted(y, points, side="right") / len(y)
    return float(np.max(np.abs(cdf_x - cdf_y)))


# ---------------------------------------------------------------- Minkowski functionals

def minkowski_functionals(fields: np.ndarray, thresholds: np.ndarray, sigma: float | None = None,
                          mean: float | None = None, width: float = 0.2) -> np.ndarray:
    """V0, V1, V2 of each field's excursion sets ``{u > ν}``: float64 ``[N, 3, T]``.

    ``fields`` float ``[N, H, W]``; ``u = (x − mean) / sigma``, by default each field's own
    mean and standard deviation; ``thresholds`` ν ``[T]`` in units of σ. Per unit area, with
    lengths in pixels (Schmalzing & Górski 1998 normalisation):

    * V0 = area fraction with u > ν;
    * V1 = ¼ · boundary length per pixel² = ¼ <δ(u − ν) |∇u|>;
    * V2 = Euler characteristic per pixel² = (1/2π) <δ(u − ν) κ |∇u|>, with the curvature
      term ``(2 u_x u_y u_xy − u_x² u_yy − u_y² u_xx) / |∇u|²``.

    Derivatives are central differences on the interior pixels; δ is a box of ``width`` (in
    σ). Accurate for fields smooth on the pixel scale (a beam of a few pixels).
    """
    x = np.asarray(fields, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    nu = np.asarray(thresholds, dtype=np.float64)
    center = x.mean(axis=(1, 2), keepdims=True) if mean is None else mean
    scale = x.std(axis=(1, 2), keepdims=True) if sigma is None else sigma
    u = (x - center) / np.where(np.asarray(scale) > 0, scale, 1.0)
    inner, grad, curvature = _derivatives(u)
    n, area = len(u), inner.shape[1] * inner.shape[2]
    inner, grad, curvature = inner.reshape(n, -1), grad.reshape(n, -1), curvature.reshape(n, -1)
    out = np.empty((n, 3, len(nu)))
    for t, level in enumerate(nu):
        out[:, 0, t] = np.count_nonzero(inner > level, axis=1) / area
        box = np.abs(inner - level) < width / 2
        out[:, 1, t] = 0.25 * np.where(box, grad, 0.0).sum(axis=1) / (width * area)
        out[:, 2, t] = np.where(box, curvature, 0.0).sum(axis=1) / (2.0 * np.pi * width * area)
    return out


def _derivatives(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interior values, |∇u| and the curvature term (κ|∇u|) of ``u`` [N, H, W] → each [N, H-2, W-2]."""
    c, ux, uy, uxx, uyy, uxy = central_differences(u)
    g2 = ux**2 + uy**2
    curvature = np.divide(2.0 * ux * uy * uxy - ux**2 * uyy - uy**2 * uxx, g2,
                          out=np.zeros_like(g2), where=g2 > 0)
    return c, np.sqrt(g2), curvature


def central_differences(u):
    """(u, u_x, u_y, u_xx, u_yy, u_xy) on the interior pixels of ``u`` [N, H, W] → each [N, H-2, W-2].

    Slicing and arithmetic only, so NumPy arrays and TensorFlow tensors alike (G's
    morphology term, ``train.morphology_loss``, differentiates through it).
    """
    c = u[:, 1:-1, 1:-1]
    ux = (u[:, 1:-1, 2:] - u[:, 1:-1, :-2]) / 2.0
    uy = (u[:, 2:, 1:-1] - u[:, :-2, 1:-1]) / 2.0
    uxx = u[:, 1:-1, 2:] - 2.0 * c + u[:, 1:-1, :-2]
    uyy = u[:, 2:, 1:-1] - 2.0 * c + u[:, :-2, 1:-1]
    uxy = (u[:, 2:, 2:] - u[:, 2:, :-2] - u[:, :-2, 2:] + u[:, :-2, :-2]) / 4.0
    return c, ux, uy, uxx, uyy, uxy


