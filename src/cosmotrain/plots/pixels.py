"""One-point and morphological statistics of CMB patches: pixel PDF, Minkowski functionals."""
from __future__ import annotations

import numpy as np

from cosmotrain.science.monitors import FUNCTIONALS


def pixel_pdf(result: dict):
    """The pixel PDF of generated and real patches (a monitor's result), log scale."""
    import matplotlib.pyplot as plt

    edges = np.asarray(result["hist_edges_uK"])
    width = np.diff(edges)
    centres = 0.5 * (edges[1:] + edges[:-1])
    figure, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, colour, label in (("real", "k", "training patches"), ("gen", "C3", "generated")):
        counts = np.asarray(result[f"hist_{name}"])
        density = counts / max(counts.sum(), 1.0) / width
        ax.step(centres, density, where="mid", color=colour, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("T [μK]")
    ax.set_ylabel("pixel PDF [1/μK]")
    ax.set_title(f"KS distance {result['ks']:.4f} = {result['ks_over_floor']:.2f} × real-vs-real")
    ax.legend(fontsize=8)
    return figure


def minkowski(result: dict):
    """V0, V1, V2 of generated and real patches against threshold (a monitor's result)."""
    import matplotlib.pyplot as plt

    nu = np.asarray(result["thresholds_sigma"])
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    labels = ("V0 (area fraction)", "V1 (boundary length)", "V2 (Euler characteristic)")
    for i, (ax, label) in enumerate(zip(axes, labels)):
        real, real_std = np.asarray(result["mf_real"])[i], np.asarray(result["mf_real_std"])[i]
        gen, gen_std = np.asarray(result["mf_gen"])[i], np.asarray(result["mf_gen_std"])[i]
        ax.plot(nu, real, "k-", label="training patches")
        ax.fill_between(nu, real - real_std, real + real_std, color="k", alpha=0.15)
        ax.errorbar(nu, gen, gen_std, fmt="o", color="C3", ms=4, label="generated")
        ax.set_xlabel("threshold ν [real pixel σ]")
        ax.set_title(f"{label}: error/floor {result[f'mf_{FUNCTIONALS[i]}_over_floor']:.2f}", fontsize=9)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    return figure
