"""Light profiles, coordinates, colours and the PSF blur shared by the synthetic-galaxy renderers.

Pure NumPy, vectorised over a stack of N galaxies: maps are float32 [N, S, S] (pixels of
the image being rendered), per-galaxy parameters float [N]. ``simple_galaxies`` (the first
generator) and ``survey`` (the survey-like one) both draw with these.
"""
from __future__ import annotations

import numpy as np

RED = np.array([1.0, 0.78, 0.58], dtype=np.float32)   # RGB weights of an old stellar population
BLUE = np.array([0.66, 0.82, 1.0], dtype=np.float32)  # and of a young one


def tint_rgb(tint: np.ndarray) -> np.ndarray:
    """RGB weights (float32 [N,3], mean 1) of colours ``tint`` (float [N], 0 red .. 1 blue)."""
    t = np.clip(np.asarray(tint, dtype=np.float32), 0.0, 1.0)[:, None]
    rgb = (1.0 - t) * RED + t * BLUE
    return rgb / rgb.mean(axis=1, keepdims=True)


def galaxy_frame(size: int, x0: np.ndarray, y0: np.ndarray, pa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (float32 [N,size,size] each, pixels) along and across each galaxy's major axis.

    ``x0, y0`` (float [N], pixels) offset the centre from the image centre; ``pa`` (float [N],
    radians) turns the major axis anticlockwise from the x axis.
    """
    axis = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    dx = axis[None, None, :] - np.asarray(x0, np.float32)[:, None, None]
    dy = axis[None, :, None] - np.asarray(y0, np.float32)[:, None, None]
    c = np.cos(pa).astype(np.float32)[:, None, None]
    s = np.sin(pa).astype(np.float32)[:, None, None]
    return dx * c + dy * s, -dx * s + dy * c


def sersic(r: np.ndarray, n: np.ndarray, r_eff: np.ndarray) -> np.ndarray:
    """Sérsic surface brightness (float32, same shape as ``r``), 1 at the effective radius.

    ``r`` [N,H,W] and ``r_eff`` [N] in pixels, ``n`` [N] the Sérsic index; b_n from Ciotti &
    Bertin (1999).
    """
    n = np.asarray(n, np.float32)[:, None, None]
    b = 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n)
    x = r / np.asarray(r_eff, np.float32)[:, None, None]
    return np.exp(-b * (x ** (1.0 / n) - 1.0)).astype(np.float32)


def exponential(r: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Exponential disk (float32, shape of ``r``), 1 at the centre; ``h`` [N] the scale length."""
    return np.exp(-r / np.asarray(h, np.float32)[:, None, None])


def elliptical_radius(u: np.ndarray, v: np.ndarray, q: np.ndarray, soft: float = 0.5) -> np.ndarray:
    """Radius (float32 [N,H,W], pixels) of ellipses of axis ratio ``q`` [N], softened by ``soft``."""
    vq = v / np.asarray(q, np.float32)[:, None, None]
    return np.sqrt(u * u + vq * vq + soft * soft)


def gaussian_kernels(size: int, sigma: np.ndarray) -> np.ndarray:
    """1-D Gaussian blur matrices (float32 [N,size,size]), one per ``sigma`` [N] (pixels).

    Row ``i`` holds the weights of output pixel ``i``; each Gaussian is normalised over the
    whole line, so light falling off the image edge is lost, as on a real detector.
    """
    offsets = np.arange(size, dtype=np.float32)
    d2 = (offsets[:, None] - offsets[None, :]) ** 2
    s2 = (2.0 * np.asarray(sigma, np.float32) ** 2)[:, None, None]
    line = np.arange(-size, size + 1, dtype=np.float32) ** 2
    norm = np.exp(-line[None, :] / s2[:, :, 0]).sum(axis=1)[:, None, None]
    return np.exp(-d2[None] / s2) / norm


def gaussian_blur(maps: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Each map (float32 [N,H,H]) convolved with a circular Gaussian of its own ``sigma`` [N] (pixels)."""
    kernels = gaussian_kernels(maps.shape[1], sigma)
    return np.matmul(np.matmul(kernels, maps), kernels.transpose(0, 2, 1))
