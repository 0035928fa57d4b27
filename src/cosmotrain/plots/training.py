"""How training went: losses and scores against step or epoch, from a run's ``history.csv``."""
from __future__ import annotations

import numpy as np

from cosmotrain.plots import GENERATED, REAL
from cosmotrain.rundir import read_history

LN2 = float(np.log(2.0))


def gan_losses(history_csv, title: str, cl_goal: float, ks_goal: float, best_step: int | None = None):
    """The GAN's losses, D's outputs and the monitor scores against step; None when the history is empty or missing.

    Dotted lines mark where a balanced game sits (D(x) = D(G(z)) = ½: J_D = 2 ln 2, J_G = ln 2),
    dashed lines the monitors' goals.
    """
    import matplotlib.pyplot as plt

    try:
        h = read_history(history_csv)
    except OSError:
        return None
    if not h or not len(h.get("step", [])):
        return None
    figure, axes = plt.subplots(3, 1, figsize=(7.5, 9), sharex=True, height_ratios=(3, 2, 3))
    _losses_panel(axes[0], h)
    _discriminator_panel(axes[1], h)
    _monitor_panel(axes[2], h, cl_goal, ks_goal)
    if best_step is not None:
        for ax in axes:
            ax.axvline(best_step, color="0.5", lw=0.8, ls=":")
        axes[2].annotate(" best", (best_step, axes[2].get_ylim()[1]), va="top", fontsize=8, color="0.4")
    axes[2].set_xlabel("training step")
    axes[0].set_title(f"{title}: training history", fontsize=10)
    figure.tight_layout()
    return figure


def _losses_panel(ax, h: dict) -> None:
    ax.plot(h["step"], h["d_loss"], color="C0", label=r"$J_D$ (discriminator)")
    ax.plot(h["step"], h["g_loss"], color="C1", label=r"$J_G$ (generator, adversarial part)")
    ax.axhline(2 * LN2, color="C0", ls=":", lw=0.9, label=r"$J_D = 2\ln 2$ (balanced)")
    ax.axhline(LN2, color="C1", ls=":", lw=0.9, label=r"$J_G = \ln 2$ (balanced)")
    if np.any(h.get("g_spectrum", np.zeros(1)) != 0):  # the term is on (S itself hovers around 0, often below)
        ax.plot(h["step"], h["g_spectrum"], color="C4", label=r"$S$ (G's spectrum term, before its weight)")
    if np.any(h.get("g_morphology", np.zeros(1)) != 0):
        ax.plot(h["step"], h["g_morphology"], color="C5", label=r"$M$ (G's morphology term, before its weight)")
    ax.set_ylabel("loss (mean since last row)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def _discriminator_panel(ax, h: dict) -> None:
    ax.plot(h["step"], h["d_real"], color=REAL, label=r"$D(x)$: D's mean output on real patches")
    ax.plot(h["step"], h["d_fake"], color=GENERATED, label=r"$D(G(z))$: on generated patches")
    ax.axhline(0.5, color="0.5", ls=":", lw=0.9, label="½: D cannot tell them apart")
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability 'real'")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _monitor_panel(ax, h: dict, cl_goal: float, ks_goal: float) -> None:
    seen = np.isfinite(h.get("score", np.full(len(h["step"]), np.nan)))
    if not seen.any():
        ax.text(0.5, 0.5, "no monitor yet", transform=ax.transAxes, ha="center", color="0.5")
        return
    step = h["step"][seen]
    ax.plot(step, h["cl_error_over_floor"][seen], "o-", ms=3, color="C0", label=r"worst-bin $C_\ell$ error / floor")
    ax.plot(step, h["ks_over_floor"][seen], "s-", ms=3, color="C1", label="pixel KS / floor")
    ax.axhline(cl_goal, color="C0", ls="--", lw=1, label=fr"$C_\ell$ goal ≤ {cl_goal:g}")
    ax.axhline(ks_goal, color="C1", ls="--", lw=1, label=f"KS goal ≤ {ks_goal:g}")
    ax.axhline(1.0, color=REAL, lw=0.8, label="floor (real patches)")
    top = np.nanmax([h["cl_error_over_floor"][seen].max(), h["ks_over_floor"][seen].max(), ks_goal])
    ax.set_ylim(0, min(float(top) * 1.1, 10.0))
    ax.set_ylabel("monitor / its floor")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def classifier_curves(history, title: str, best_epoch: int | None = None):
    """Loss, accuracy and learning rate per epoch (train and validation), the best epoch marked."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    h = read_history(history)
    epoch = h.get("epoch", np.zeros(0))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, label in ((axes[0], "loss", "cross-entropy loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epoch, h.get(key, []), "o-", color="C0", label="training (during the epoch)")
        ax.plot(epoch, h.get(f"val_{key}", []), "s-", color="C1", label="validation (end of epoch)")
        ax.set_ylabel(label)
    axes[2].plot(epoch, h.get("lr", []), "o-", color="C2", label="learning rate at the epoch's end")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("learning rate")
    for ax in axes:
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.5", ls=":", lw=0.9, label=f"best (lowest val. loss): epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title}: training curves (averaged over ranks)", fontsize=10)
    fig.tight_layout()
    return fig
