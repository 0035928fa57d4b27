"""How well a classifier does: the confusion matrix."""
from __future__ import annotations

import numpy as np


def confusion(cm: np.ndarray, names: list[str], title: str):
    """Confusion matrix int [C, C] (rows: true class): colour = fraction of the true class, text = count and fraction.

    ``title`` names what was evaluated: run, split, checkpoint, test-time augmentation.
    """
    import matplotlib.pyplot as plt

    support = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, support, out=np.zeros(cm.shape), where=support > 0)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{frac[i, j]:.1%}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), [f"{n}\n({support[i, 0]})" for i, n in enumerate(names)])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (images)")
    ax.set_title(f"{title}\naccuracy {np.trace(cm) / max(cm.sum(), 1):.3f} on {cm.sum()} images", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    return fig
