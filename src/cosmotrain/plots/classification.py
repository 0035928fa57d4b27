"""How well a classifier does: the confusion matrix."""
from __future__ import annotations

import numpy as np


def confusion(cm: np.ndarray, names: list[str]):
    """Confusion matrix: colour = fraction of the true class, text = count and fraction."""
    import matplotlib.pyplot as plt

    support = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, support, out=np.zeros(cm.shape), where=support > 0)
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{frac[i, j]:.1%}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix (accuracy {np.trace(cm) / max(cm.sum(), 1):.3f})")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    return fig
