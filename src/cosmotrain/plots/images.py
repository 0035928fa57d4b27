"""Pictures of the images themselves: CMB patches, generated next to real, galaxies.

Each function returns a matplotlib figure; saving is the caller's (``rundir.write_figure``).
"""
from __future__ import annotations

import numpy as np

MAX_SHOWN = 32  # misclassified galaxies shown at most


def cmb_patches(patches: np.ndarray, centers: np.ndarray, reso_arcmin: float):
    """A grid of patches (float [N, H, W], μK; centres [N, 2] lon, lat deg) on one colour scale with a colour bar."""
    import matplotlib.pyplot as plt

    n = len(patches)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    limit = float(np.percentile(np.abs(patches), 99.5)) or 1.0
    side = patches.shape[2] * reso_arcmin / 60.0
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols + 1.2, 2.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i in range(n):
        ax = axes.ravel()[i]
        image = ax.imshow(patches[i], cmap="RdBu_r", vmin=-limit, vmax=limit,
                          extent=(side / 2, -side / 2, -side / 2, side / 2))
        ax.set_title(f"l={centers[i, 0]:.0f}° b={centers[i, 1]:.0f}°", fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="T [μK_CMB]")
    fig.suptitle(f"CMB patches, {patches.shape[1]}x{patches.shape[2]} px of {reso_arcmin:g}' ({side:.1f}° wide)")
    return fig


def real_and_generated(real: np.ndarray, gen: np.ndarray, reso_arcmin: float, title: str):
    """Real patches above generated ones (float [k, H, W] μK each), on one symmetric colour scale, axes in degrees."""
    import matplotlib.pyplot as plt

    k = max(1, min(len(real), len(gen), 6))
    limit = float(np.percentile(np.abs(real), 99.5)) if real.size else 1.0
    side = real.shape[1] * reso_arcmin / 60.0 if real.size else 1.0
    figure, axes = plt.subplots(2, k, figsize=(1.9 * k + 1.4, 4.6), squeeze=False, layout="constrained")
    for row, (name, patches) in enumerate((("held-out skies", real), ("generated", gen))):
        for i in range(k):
            ax = axes[row, i]
            ax.tick_params(labelsize=7)
            if i < len(patches):
                image = ax.imshow(patches[i], cmap="RdBu_r", vmin=-limit, vmax=limit, extent=(0, side, 0, side))
            if i == 0:
                ax.set_ylabel(f"{name}\n[deg]", fontsize=9)
            else:
                ax.set_yticklabels([])
            if row == 0:
                ax.set_xticklabels([])
    figure.colorbar(image, ax=axes, shrink=0.9, label=r"$T$  [$\mu$K$_{\rm CMB}$]")
    figure.suptitle(f"{title}\n{real.shape[1]}×{real.shape[2]} pixels of {reso_arcmin:g}′ ({side:.1f}° a side), "
                    f"one colour scale", fontsize=10)
    return figure


def misclassified(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, names: list[str], title: str):
    """Up to ``MAX_SHOWN`` wrongly classified galaxies (uint8 [N, H, W, 3]), most confident mistakes first.

    With no mistakes, the least confident correct predictions are shown instead. ``title``
    names the run, split, checkpoint and augmentation.
    """
    import matplotlib.pyplot as plt

    preds = probs.argmax(axis=1)
    confidence = probs[np.arange(len(preds)), preds] if len(preds) else np.zeros(0)
    wrong = np.flatnonzero(preds != labels)
    if len(wrong):
        shown = wrong[np.argsort(-confidence[wrong], kind="stable")][:MAX_SHOWN]
        heading = f"{len(wrong)} misclassified of {len(labels)} (most confident mistakes first; pred = probability)"
    else:
        shown = np.argsort(confidence, kind="stable")[:MAX_SHOWN // 2]
        heading = f"no misclassified galaxies of {len(labels)}; the {len(shown)} least confident correct ones"
    cols = max(1, min(8, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 2.1 * rows + 0.6), squeeze=False, layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), shown):
        ax.imshow(images[i])
        ax.set_title(f"true {names[labels[i]]}\npred {names[preds[i]]} {confidence[i]:.2f}", fontsize=7)
    fig.suptitle(f"{heading}\n{title}", fontsize=9)
    return fig


def galaxy_preview(images: np.ndarray, labels: np.ndarray, names: list[str], title: str, per_class: int = 10):
    """The first ``per_class`` galaxies (uint8 [N, H, W, 3]) of each class, one labelled row per class.

    ``labels`` (int [N]) index ``names``; galaxies of label -1 (no class reached the vote
    threshold), if any, get a last row of their own.
    """
    import matplotlib.pyplot as plt

    h, w = images.shape[1:3]
    rows = [(c, name) for c, name in enumerate(names)] + ([(-1, "no class ≥ τ")] if (labels < 0).any() else [])
    fig, axes = plt.subplots(len(rows), per_class, figsize=(1.05 * per_class + 1.0, 1.15 * len(rows) + 0.6),
                             squeeze=False)
    for row, (c, name) in enumerate(rows):
        members = np.flatnonzero(labels == c)
        for j, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(members):
                ax.imshow(images[members[j]])
        axes[row, 0].set_ylabel(f"{name} ({c})\n{len(members)} images", fontsize=9, rotation=0, ha="right",
                                va="center")
    fig.suptitle(f"{title}\n{h}×{w} RGB images, first {per_class} of each class", fontsize=9)
    fig.subplots_adjust(wspace=0.04, hspace=0.06, left=0.16)
    return fig
