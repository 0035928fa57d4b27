"""How training went: losses and scores against step or epoch, from a run's ``history.csv``."""
from __future__ import annotations

import numpy as np

from cosmotrain.rundir import read_history


def gan_losses(history_csv):
    """J_D, J_G (and S) against step, and the monitor scores; None when the history is empty or missing."""
    import matplotlib.pyplot as plt

    try:
        h = read_history(history_csv)
    except OSError:
        return None
    if not h or not len(h.get("step", [])):
        return None
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    top.plot(h["step"], h["d_loss"], label="J_D (discriminator)")
    top.plot(h["step"], h["g_loss"], label="J_G (generator)")
    if np.any(h.get("g_spectrum", np.zeros(1)) != 0):  # the term is on (S itself hovers around 0, often below)
        top.plot(h["step"], h["g_spectrum"], label="S (G's spectrum term, before its weight)")
    top.set_ylabel("loss")
    top.legend(fontsize=8)
    seen = np.isfinite(h["score"])
    for name in ("cl_error_over_floor", "ks_over_floor", "score"):
        bottom.plot(h["step"][seen], h[name][seen], "o-", ms=3, label=name)
    bottom.axhline(1.0, color="k", lw=0.8)
    bottom.set_yscale("log")
    bottom.set_xlabel("step")
    bottom.set_ylabel("monitor / floor")
    bottom.legend(fontsize=8)
    return figure


def classifier_curves(history):
    """Training and validation loss and accuracy per epoch."""
    import matplotlib.pyplot as plt

    h = read_history(history)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, label in ((axes[0], "loss", "cross-entropy loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(h.get("epoch", []), h.get(key, []), "o-", label="train")
        ax.plot(h.get("epoch", []), h.get(f"val_{key}", []), "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("training curves (averaged over ranks)")
    fig.tight_layout()
    return fig
