"""Non-parametric morphology of galaxy cut-outs, and the simple classifiers built on it.

``measure(images)`` segments the central galaxy of each uint8 RGB cut-out (pixels above the
sky by 3 sigma of the border's noise, the connected region around the brightest central
pixel, neighbours and stars left out) and measures, from its sky-subtracted brightness:

* ``size``: R50, the radius (pixels) of the circle about the light centroid holding half the light;
* ``r90``: the same for 90 %; ``concentration``: R90 / R50 (the SDSS concentration index);
* ``axis_ratio``: minor / major axis from the second moments;
* ``colour``: (R - B) / (R + G + B) of the galaxy's light; ``colour_gradient``: inside R50
  minus outside;
* ``area``: the segment's equivalent radius sqrt(area / π), pixels.

``binned_rule`` (one feature, the majority class in each of 16 quantile bins),
``stump_pair`` (two thresholds on two features, as a person would set them) and
``LogisticRegression`` (multinomial, L2) are the baselines that a learned classifier is
compared with (``cosmotrain bench galaxy-baselines``). Pure NumPy/SciPy.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage, optimize

FEATURES = ("size", "r90", "concentration", "axis_ratio", "colour", "colour_gradient", "area")
BORDER = 4  # pixels of the frame used for the sky and its noise


def measure(images: np.ndarray) -> dict[str, np.ndarray]:
    """The ``FEATURES`` of every cut-out: {name: float64 [N]}; ``images`` uint8 [N, H, W, 3]."""
    rows = [_measure_one(np.asarray(image, np.float64)) for image in images]
    return {name: np.array([r[i] for r in rows]) for i, name in enumerate(FEATURES)}


def _sky(lum: np.ndarray) -> tuple[float, float]:
    frame = np.concatenate([lum[:BORDER].ravel(), lum[-BORDER:].ravel(), lum[:, :BORDER].ravel(),
                            lum[:, -BORDER:].ravel()])
    level = float(np.median(frame))
    return level, max(1.4826 * float(np.median(np.abs(frame - level))), 0.5)


def segment(lum: np.ndarray) -> np.ndarray:
    """bool [H, W]: the connected region above the sky (3 sigma) that holds the brightest central pixel."""
    sky, noise = _sky(lum)
    above = ndimage.binary_opening(lum > sky + 3 * noise)
    labels, _ = ndimage.label(above)
    h, w = lum.shape
    centre = lum[h // 4:3 * h // 4, w // 4:3 * w // 4]
    y, x = np.unravel_index(np.argmax(centre), centre.shape)
    label = labels[y + h // 4, x + w // 4]
    return labels == label if label else np.zeros_like(above)


def _measure_one(image: np.ndarray) -> tuple[float, ...]:
    lum = image.mean(axis=2)
    mask = segment(lum)
    if mask.sum() < 3:
        return (np.nan,) * len(FEATURES)
    weight = np.where(mask, np.clip(lum - _sky(lum)[0], 0, None), 0.0)
    total = weight.sum()
    y, x = np.indices(lum.shape, dtype=np.float64)
    cx, cy = (weight * x).sum() / total, (weight * y).sum() / total
    dx, dy = x - cx, y - cy
    cov = np.array([[(weight * dx * dx).sum(), (weight * dx * dy).sum()],
                    [(weight * dx * dy).sum(), (weight * dy * dy).sum()]]) / total
    low, high = np.linalg.eigvalsh(cov)
    radius = np.hypot(dx, dy)
    order = np.argsort(radius[mask])
    light = np.cumsum(weight[mask][order]) / total
    r50, r90 = (float(radius[mask][order][np.searchsorted(light, f)]) + 0.5 for f in (0.5, 0.9))
    colour = _colour(image, mask)
    inner, outer = mask & (radius <= r50), mask & (radius > r50)
    gradient = _colour(image, inner) - _colour(image, outer) if outer.any() else 0.0
    return (r50, r90, r90 / r50, float(np.sqrt(max(low, 0) / high)), colour, gradient,
            float(np.sqrt(mask.sum() / np.pi)))


def _colour(image: np.ndarray, mask: np.ndarray) -> float:
    r, g, b = (image[..., c][mask].sum() for c in range(3))
    return float((r - b) / max(r + g + b, 1e-9))


# ---------------------------------------------------------------- the simple classifiers

def binned_rule(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, bins: int = 16) -> np.ndarray:
    """Predicted classes (int [M]) of ``test_x`` [M] by the majority training class in its quantile bin of one feature."""
    edges = np.unique(np.quantile(train_x, np.linspace(0, 1, bins + 1)[1:-1]))
    classes = np.unique(train_y)
    where = np.searchsorted(edges, train_x)
    majority = np.array([classes[np.argmax([(train_y[where == b] == c).sum() for c in classes])]
                         if (where == b).any() else classes[0] for b in range(len(edges) + 1)])
    return majority[np.searchsorted(edges, test_x)]


def stump_pair(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, grid: int = 24) -> tuple[np.ndarray, dict]:
    """The best rule "feature a < s → class c1; else feature b > t → c2; else c3" on the training set.

    ``train`` [N, F] and ``test`` [M, F] hold the features; thresholds run over ``grid``
    quantiles of each. Returns the test predictions (int [M]) and the rule. This is the kind
    of rule a person writes by hand (e.g. axis ratio < 0.5 → edge-on; size > 10 px → spiral).
    """
    classes = np.unique(train_y)
    levels = [np.quantile(train[:, f], np.linspace(0.02, 0.98, grid)) for f in range(train.shape[1])]
    best = (-1.0, None)
    for a in range(train.shape[1]):
        for s in levels[a]:
            low = train[:, a] < s
            c1 = classes[np.argmax([(train_y[low] == c).sum() for c in classes])]
            for b in range(train.shape[1]):
                for t in levels[b]:
                    high = ~low & (train[:, b] > t)
                    rest = ~low & ~high
                    c2, c3 = (classes[np.argmax([(train_y[m] == c).sum() for c in classes])] for m in (high, rest))
                    score = ((train_y[low] == c1).sum() + (train_y[high] == c2).sum() + (train_y[rest] == c3).sum())
                    if score > best[0]:
                        best = (score, (a, s, c1, b, t, c2, c3))
    a, s, c1, b, t, c2, c3 = best[1]
    pred = np.where(test[:, a] < s, c1, np.where(test[:, b] > t, c2, c3))
    return pred, {"feature_a": a, "below": float(s), "class_a": int(c1), "feature_b": b, "above": float(t),
                  "class_b": int(c2), "otherwise": int(c3)}


class LogisticRegression:
    """Multinomial logistic regression with an L2 penalty, on standardised features (L-BFGS).

    ``fit(x [N, F], y int [N])`` then ``predict(x [M, F])`` → int [M]; classes are 0..K-1.
    """

    def __init__(self, penalty: float = 1e-3):
        self.penalty = penalty

    def fit(self, x: np.ndarray, y: np.ndarray) -> "LogisticRegression":
        self.mean, self.scale = x.mean(axis=0), x.std(axis=0) + 1e-12
        z = np.hstack([(x - self.mean) / self.scale, np.ones((len(x), 1))])
        k = int(y.max()) + 1
        onehot = np.eye(k)[y]

        def loss(w):
            logits = z @ w.reshape(z.shape[1], k)
            logits -= logits.max(axis=1, keepdims=True)
            logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            grad = z.T @ (np.exp(logp) - onehot) / len(z)
            w2 = w.reshape(z.shape[1], k)
            return (-(onehot * logp).sum() / len(z) + self.penalty * (w2[:-1] ** 2).sum(),
                    (grad + 2 * self.penalty * np.vstack([w2[:-1], np.zeros((1, k))])).ravel())

        result = optimize.minimize(loss, np.zeros(z.shape[1] * k), jac=True, method="L-BFGS-B")
        self.weights = result.x.reshape(z.shape[1], k)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = np.hstack([(x - self.mean) / self.scale, np.ones((len(x), 1))])
        return np.argmax(z @ self.weights, axis=1)
