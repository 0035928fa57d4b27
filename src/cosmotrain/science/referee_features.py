"""What the referee measures on every patch, and the sums it compares.

A ``Probe`` is fixed from the reference patches (ℓ bins, rings, pixel σ, PDF edges,
thresholds) and measures, for each patch of float ``[N, H, W]`` μK, one row of
``features``: float64 ``[N, F]`` whose columns are named by ``Probe.columns``:

* ``bp``: Hann-apodised band powers, bins two fundamentals wide up to the Nyquist ℓ,
  relative to the reference's mean (so 1 is the reference);
* ``bp2``: the squared deviation of ``bp`` from 1 (the scatter test's raw material);
* ``ring``: power in rings one fundamental wide (k ≤ |k| < k+1), relative to the
  reference's mean: the sharp, per-ring estimator (``ring_powers``), read twice from the
  patch's discrete Laplacian, which prewhitens the steep CMB spectrum (its k⁴ transfer
  cancels in the ratio to the reference). First under a Tukey window (cosine edges over
  half the side, ``RING_TAPER``): little of the large scales leaks into a ring, so it sees
  a change in the sky's C_ℓ. Then without a window, from the patch's periodic component
  (``periodic_component``): the patch's own Fourier grid, where a generator's errors live
  (a 5 % boost of one low ring there is caught far more often than through the window),
  without the edge jumps' leakage. Measured in tests/unit/test_referee.py
  and ``bench/experiments/ring_windows.py``;
* ``one``: per-patch mean (μK), σ (μK), skewness and excess kurtosis; ``one2`` their
  squared deviations from the reference's means;
* ``pdf``: the fraction of the patch's pixels in each PDF bin of (T − patch mean) / patch σ
  (±4, the end bins take the tails): the shape of the PDF, its width being the σ of ``one``;
* ``mf``: Minkowski functionals V0, V1, V2 of (T − patch mean) / patch σ at the thresholds.

PDF and functionals are per-patch standardised because a sky's overall amplitude varies
with its realisation of the low multipoles: in μK they would mostly measure which skies the
reference came from.

Everything the tests need from a set of patches is ``Moments``: the count, the sum and
the sum of outer products of these rows, overall and per sky. Sums add over batches and
MPI ranks, so a sample set of any size is never held in memory. ``coarse`` makes the
block-averaged patches the nearest-neighbour search uses; ``pair_correlations`` the
pixel correlations of disjoint pairs. Pure NumPy.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from cosmotrain.science import spectra, stats

THRESHOLDS = (-2.0, -1.0, 0.0, 1.0, 2.0)
PDF_BINS, PDF_SIGMAS = 16, 4.0
COARSE_SIDE = 8  # nearest neighbours are searched among 8x8 block means
RING_TAPER = 0.5  # the ring estimator's Tukey window: cosine edges over this fraction of the side
RING_READINGS = ("windowed", "unwindowed")  # ``ring_powers``' two halves, in order


@dataclasses.dataclass(frozen=True, eq=False)
class Probe:
    """The referee's measurements, fixed from the reference patches; picklable."""

    binning: spectra.Binning     # bins 2 fundamentals wide, Hann window
    ring_matrix: np.ndarray      # float64 [H·(W//2+1), R]: rfft2 powers → rings 2..Nyquist
    ring_k: np.ndarray           # int [R]: each ring's k in fundamentals
    bp_ref: np.ndarray           # float64 [B]: reference mean band powers, μK²
    ring_ref: np.ndarray         # float64 [2R]: reference mean ring powers (``ring_powers``), μK²
    one_ref: np.ndarray          # float64 [4]: reference means of the one-point statistics
    sigma: float                 # reference pixel σ about the patch means, μK
    pdf_edges: np.ndarray        # float64 [P+1], (T − patch mean) / patch σ
    thresholds: np.ndarray       # float64 [T], in units of the patch's own σ

    @property
    def shape(self) -> tuple[int, int]:
        return self.binning.shape

    @property
    def columns(self) -> dict[str, slice]:
        """Name → column range of ``features``."""
        sizes = {"bp": self.binning.nbins, "bp2": self.binning.nbins, "ring": len(self.ring_ref), "one": 4,
                 "one2": 4, "pdf": len(self.pdf_edges) - 1, "mf": 3 * len(self.thresholds)}
        out, start = {}, 0
        for name, size in sizes.items():
            out[name] = slice(start, start + size)
            start += size
        return out

    @property
    def width(self) -> int:
        return list(self.columns.values())[-1].stop


def make_probe(reference: np.ndarray, reso_arcmin: float) -> Probe:
    """The probe of reference patches float [n, H, W] μK of pixel side ``reso_arcmin`` (arcmin)."""
    x = np.asarray(reference, dtype=np.float64)
    shape = (int(x.shape[1]), int(x.shape[2]))
    binning = spectra.make_binning(shape, reso_arcmin)
    matrix, ks = _ring_matrix(binning)
    powers = spectra.mode_powers(x, binning).reshape(len(x), -1)
    rings = ring_powers(x, matrix)
    one = one_point(x)
    sigma = float(np.sqrt(np.mean((x - x.mean(axis=(1, 2), keepdims=True)) ** 2)))
    edges = np.linspace(-PDF_SIGMAS, PDF_SIGMAS, PDF_BINS + 1)
    return Probe(binning, matrix, ks, (powers @ binning.matrix).mean(axis=0), rings.mean(axis=0),
                 one.mean(axis=0), sigma, edges, np.asarray(THRESHOLDS))


def _ring_matrix(binning: spectra.Binning) -> tuple[np.ndarray, np.ndarray]:
    """Averaging matrix of rfft2 modes into rings k ≤ |k| < k+1 fundamentals, k = 2 … Nyquist."""
    h, w = binning.shape
    ky = np.fft.fftfreq(h) * h * (min(h, w) / h)
    kx = np.fft.rfftfreq(w) * w * (min(h, w) / w)
    ring = np.floor(np.hypot(ky[:, None], kx[None, :]) + 1e-9).astype(int).ravel()
    multiplicity = np.full(kx.size, 2.0)
    multiplicity[0] = 1.0
    if w % 2 == 0:
        multiplicity[-1] = 1.0
    weight = np.broadcast_to(multiplicity, (h, kx.size)).ravel()
    ks = np.arange(2, min(h, w) // 2)
    matrix = np.zeros((ring.size, len(ks)))
    for j, k in enumerate(ks):
        matrix[ring == k, j] = weight[ring == k]
    return matrix / matrix.sum(axis=0), ks


def ring_powers(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Each patch's power in the rings of ``matrix`` [modes, R], prewhitened by the 5-point
    Laplacian: first of the interior pixels under the Tukey window, then of the patch's
    periodic component without a window: float64 [N, 2R] (unnormalised powers).

    The windowed Laplacian of the (H−2)×(W−2) interior is zero-padded back to H×W, so its
    modes lie on the patch's own Fourier grid and ``_ring_matrix`` applies. The unwindowed
    reading is the periodic Laplacian of ``periodic_component``: exactly the patch's own
    Fourier modes × the Laplacian's transfer, without the cross of edge jumps.
    """
    lap = laplacian(x)
    taper = spectra.apodization_window(lap.shape[1:], "tukey", RING_TAPER)
    windowed = np.abs(np.fft.rfft2(lap * taper, s=x.shape[1:])) ** 2
    periodic = np.abs(_periodic_modes(x) * _laplacian_transfer(x.shape[1:])) ** 2
    return np.concatenate([p.reshape(len(x), -1) @ matrix for p in (windowed, periodic)], axis=1)


def periodic_component(x: np.ndarray) -> np.ndarray:
    """The periodic part p of each patch [N, H, W] in the periodic-plus-smooth decomposition
    x = p + s (Moisan 2011, J Math Imaging Vis 39, 161): s is smooth and takes the jumps
    across opposite edges, so p's Fourier modes carry no cross of edge leakage.
    """
    x = np.asarray(x, dtype=np.float64)
    return np.fft.irfft2(_periodic_modes(x), s=x.shape[1:])


def _periodic_modes(x: np.ndarray) -> np.ndarray:
    """rfft2 of each patch's periodic component: its own modes minus the smooth part's, whose
    periodic Laplacian is the jumps across opposite edges (the mean is left to p)."""
    x = np.asarray(x, dtype=np.float64)
    rows, cols = x[:, -1, :] - x[:, 0, :], x[:, :, -1] - x[:, :, 0]
    jumps = np.zeros_like(x)
    jumps[:, 0, :] += rows
    jumps[:, -1, :] -= rows
    jumps[:, :, 0] += cols
    jumps[:, :, -1] -= cols
    transfer = _laplacian_transfer(x.shape[1:])
    transfer[0, 0] = 1.0
    smooth = -np.fft.rfft2(jumps) / transfer
    smooth[:, 0, 0] = 0.0
    return np.fft.rfft2(x) - smooth


def _laplacian_transfer(shape: tuple[int, int]) -> np.ndarray:
    """Minus the periodic 5-point Laplacian in Fourier space on the rfft2 grid: float64 [H, W//2+1]."""
    ky = 2 * np.pi * np.fft.fftfreq(shape[0])
    kx = 2 * np.pi * np.fft.rfftfreq(shape[1])
    return 4.0 - 2.0 * np.cos(ky)[:, None] - 2.0 * np.cos(kx)[None, :]


def laplacian(x: np.ndarray) -> np.ndarray:
    """Minus the 5-point Laplacian of each patch's interior pixels: [N, H−2, W−2]."""
    return 4.0 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]


def one_point(x: np.ndarray) -> np.ndarray:
    """Per-patch mean (μK), σ (μK), skewness and excess kurtosis: float64 [N, 4]."""
    mean = x.mean(axis=(1, 2))
    d = x - mean[:, None, None]
    var = np.maximum((d**2).mean(axis=(1, 2)), 1e-30)
    skew = (d**3).mean(axis=(1, 2)) / var**1.5
    kurt = (d**4).mean(axis=(1, 2)) / var**2 - 3.0
    return np.stack([mean, np.sqrt(var), skew, kurt], axis=1)


def features(patches: np.ndarray, probe: Probe) -> np.ndarray:
    """One row of referee features per patch (float [N, H, W] μK): float64 [N, probe.width]."""
    x = np.asarray(patches, dtype=np.float64)
    if x.shape[1:] != probe.shape:
        raise ValueError(f"patches of shape {x.shape[1:]}, the referee measures {probe.shape}")
    powers = spectra.mode_powers(x, probe.binning).reshape(len(x), -1)
    bp = powers @ probe.binning.matrix / probe.bp_ref
    one = one_point(x)
    centred = x - one[:, 0, None, None]
    standard = centred / np.maximum(one[:, 1, None, None], 1e-30)
    pdf = _histograms(standard, probe.pdf_edges)
    mf = stats.minkowski_functionals(standard, probe.thresholds, sigma=1.0, mean=0.0).reshape(len(x), -1)
    scale = np.array([probe.sigma, probe.sigma, 1.0, 1.0])
    ring = ring_powers(x, probe.ring_matrix) / probe.ring_ref
    return np.concatenate([bp, (bp - 1.0) ** 2, ring, one,
                           ((one - probe.one_ref) / scale) ** 2, pdf, mf], axis=1)


def _histograms(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per-patch fractions of pixels (float64 [N, P]) in bins ``edges`` [P+1]; the end bins take the tails."""
    bins = len(edges) - 1
    index = np.clip(np.searchsorted(edges, x.reshape(len(x), -1), side="right") - 1, 0, bins - 1)
    index += np.arange(len(x))[:, None] * bins
    counts = np.bincount(index.ravel(), minlength=len(x) * bins).reshape(len(x), bins)
    return counts / (x.shape[1] * x.shape[2])


@dataclasses.dataclass
class Moments:
    """Sums over a set of patches' feature rows: count, sum [F], outer products [F, F], per sky.

    ``sky_n`` [K] and ``sky_sum`` [K, F] hold the same per simulated sky (K = 0 for a set
    of independent patches, such as a generator's).
    """

    n: float
    total: np.ndarray
    outer: np.ndarray
    sky_n: np.ndarray
    sky_sum: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray, sky: np.ndarray | None = None, skies: np.ndarray | None = None) -> "Moments":
        """Sums of ``rows`` float [n, F]; ``sky`` int [n] labels rows by sky, ``skies`` [K] lists the skies."""
        rows = np.asarray(rows, dtype=np.float64)
        labels = np.zeros(0, int) if skies is None else np.asarray(skies)
        sky_n = np.array([np.sum(sky == s) for s in labels], dtype=np.float64)
        sky_sum = np.array([rows[sky == s].sum(axis=0) for s in labels]).reshape(len(labels), rows.shape[1])
        return cls(float(len(rows)), rows.sum(axis=0), rows.T @ rows, sky_n, sky_sum)

    def packed(self) -> np.ndarray:
        """All sums as one float64 vector (to add over ranks)."""
        return np.concatenate([[self.n], self.total, self.outer.ravel(), self.sky_n, self.sky_sum.ravel()])

    @classmethod
    def unpacked(cls, vector: np.ndarray, width: int, n_skies: int) -> "Moments":
        parts = np.split(np.asarray(vector), np.cumsum([1, width, width * width, n_skies]))
        return cls(float(parts[0][0]), parts[1], parts[2].reshape(width, width), parts[3],
                   parts[4].reshape(n_skies, width))

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.n

    @property
    def cov(self) -> np.ndarray:
        """Per-patch covariance of the features (unbiased), float64 [F, F]."""
        m = self.mean
        return (self.outer / self.n - np.outer(m, m)) * self.n / max(self.n - 1.0, 1.0)

    @property
    def sky_means(self) -> np.ndarray:
        return self.sky_sum / np.maximum(self.sky_n, 1.0)[:, None]


def coarse(patches: np.ndarray) -> np.ndarray:
    """Standardised block means of patches float [N, H, W]: float32 [N, s, s], s = min(8, H, W).

    Each patch's s×s block means, minus their best-fitting plane, divided by their rms: a
    copy of a patch, rotated, flipped or rescaled, lands on it; the distance of unrelated
    patches depends neither on how loud their sky is nor on the large-scale gradients that
    one sky realises more of than the next.
    """
    x = np.asarray(patches, dtype=np.float64)
    n, h, w = x.shape
    s = min(COARSE_SIDE, h, w)
    blocks = x[:, :h // s * s, :w // s * s].reshape(n, s, h // s, s, w // s).mean(axis=(2, 4))
    u = np.arange(s) - (s - 1) / 2.0
    basis = np.stack([np.ones((s, s)), np.broadcast_to(u[:, None], (s, s)), np.broadcast_to(u[None, :], (s, s))])
    basis = basis.reshape(3, -1) / np.linalg.norm(basis.reshape(3, -1), axis=1, keepdims=True)
    flat = blocks.reshape(n, -1)
    blocks = (flat - (flat @ basis.T) @ basis).reshape(n, s, s)
    rms = np.sqrt((blocks**2).mean(axis=(1, 2), keepdims=True))
    return (blocks / np.where(rms > 0, rms, 1.0)).astype(np.float32)


def d4(blocks: np.ndarray) -> np.ndarray:
    """The 8 rotations and flips of square blocks float [N, s, s]: float32 [8·N, s·s]."""
    turns = [np.rot90(blocks, k, axes=(1, 2)) for k in range(4)]
    every = turns + [t[:, :, ::-1] for t in turns]
    return np.concatenate([t.reshape(len(blocks), -1) for t in every]).astype(np.float32)


def nearest_distances(blocks: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """RMS distance per block (in units of the patches' rms) from each of ``blocks`` [N, s, s] to its nearest
    row of ``candidates`` [M, s·s]: float64 [N]. Exhaustive: N·M·s² multiply-adds."""
    a = blocks.reshape(len(blocks), -1).astype(np.float32)
    c2 = (candidates.astype(np.float64) ** 2).sum(axis=1)
    chunk = int(np.clip(2**24 // max(len(candidates), 1), 8, 512))  # <= 128 MB of distances at a time
    out = np.empty(len(a))
    for i in range(0, len(a), chunk):
        block = a[i:i + chunk]
        d2 = (block.astype(np.float64) ** 2).sum(axis=1)[:, None] + c2[None, :] - 2.0 * (block @ candidates.T)
        out[i:i + chunk] = np.sqrt(np.maximum(d2.min(axis=1), 0.0) / a.shape[1])
    return out


def pair_correlations(patches: np.ndarray) -> np.ndarray:
    """Pixel correlation coefficient of patches 2i and 2i+1 of float [N, H, W]: float64 [N // 2]."""
    x = np.asarray(patches[:len(patches) // 2 * 2], dtype=np.float64).reshape(len(patches) // 2, 2, -1)
    d = x - x.mean(axis=2, keepdims=True)
    norm = np.sqrt((d[:, 0] ** 2).sum(axis=1) * (d[:, 1] ** 2).sum(axis=1))
    return (d[:, 0] * d[:, 1]).sum(axis=1) / np.where(norm > 0, norm, 1.0)


def cross_sky_order(sky: np.ndarray, seed: int) -> np.ndarray:
    """An order of patches (int [n]) whose consecutive pairs (2i, 2i+1) come from different skies when possible.

    Patches are shuffled (seeded), grouped by sky, and the first half interleaved with the
    second, so a pair mixes skies unless one sky holds more than half of the patches.
    """
    rng = np.random.default_rng(seed)
    grouped = np.lexsort((rng.random(len(sky)), sky))
    half = len(grouped) // 2
    paired = np.empty(2 * half, dtype=int)
    paired[0::2], paired[1::2] = grouped[:half], grouped[half:2 * half]
    return paired
