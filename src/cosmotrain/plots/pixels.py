"""One-point and morphological statistics of CMB patches: pixel PDF, Minkowski functionals."""
from __future__ import annotations

import numpy as np

from cosmotrain.plots import GENERATED, REAL, REAL_BAND
from cosmotrain.science.monitors import FUNCTIONALS


def pixel_pdf(result: dict, title: str):
    """The pixel PDF (1/μK, log scale) of generated and real patches from a monitor's result; ``title`` names the run."""
    import matplotlib.pyplot as plt

    edges = np.asarray(result["hist_edges_uK"])
    width = np.diff(edges)
    centres = 0.5 * (edges[1:] + edges[:-1])
    figure, ax = plt.subplots(figsize=(6.5, 4.4))
    for name, colour, style, label in (("real", REAL, "-", f"held-out skies ({result['n_reference']})"),
                                       ("gen", GENERATED, "--", f"generated ({result['n_generated']})")):
        counts = np.asarray(result[f"hist_{name}"])
        density = counts / max(counts.sum(), 1.0) / width
        ax.step(centres, np.where(density > 0, density, np.nan), where="mid", color=colour, ls=style, label=label)
    ax.set_yscale("log")
    ax.set_xlabel(r"pixel temperature $T$  [$\mu$K$_{\rm CMB}$]")
    ax.set_ylabel(r"pixel PDF  [$\mu$K$^{-1}$]")
    ax.set_title(f"{title}\nKS distance {result['ks']:.4f} = {result['ks_over_floor']:.2f} × its real-vs-real floor",
                 fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure


def minkowski(result: dict, title: str, reso_arcmin: float | None = None):
    """V0, V1, V2 of generated and real patches against threshold (a monitor's result).

    With the pixel side ``reso_arcmin``, V1 is shown per degree and V2 per square degree
    (``stats.minkowski_functionals`` gives them per pixel and per pixel²).
    """
    import matplotlib.pyplot as plt

    nu = np.asarray(result["thresholds_sigma"])
    per_degree = 60.0 / reso_arcmin if reso_arcmin else 1.0
    unit = (r"deg$^{-1}$", r"deg$^{-2}$") if reso_arcmin else ("pixel$^{-1}$", "pixel$^{-2}$")
    labels = (r"$V_0$: area fraction above $\nu$", rf"$V_1$: boundary length / 4 per area  [{unit[0]}]",
              rf"$V_2$: Euler characteristic per area  [{unit[1]}]")
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for i, (ax, label) in enumerate(zip(axes, labels)):
        scale = per_degree ** i
        real, real_std = (np.asarray(result[k])[i] * scale for k in ("mf_real", "mf_real_std"))
        gen, gen_std = (np.asarray(result[k])[i] * scale for k in ("mf_gen", "mf_gen_std"))
        ax.fill_between(nu, real - real_std, real + real_std, color=REAL_BAND, label="held-out skies: ±1σ per patch")
        ax.plot(nu, real, "-", color=REAL, label="held-out skies: mean")
        ax.errorbar(nu, gen, gen_std, fmt="o", color=GENERATED, ms=4, capsize=3, label="generated: mean ±1σ")
        ax.axhline(0.0, color="0.6", lw=0.6)
        ax.set_xlabel(r"threshold $\nu$  [real pixel $\sigma$]")
        ax.set_ylabel(label, fontsize=9)
        ax.set_title(f"error / floor {result[f'mf_{FUNCTIONALS[i]}_over_floor']:.2f} (worst threshold)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{title}: Minkowski functionals of the excursion sets", fontsize=10)
    figure.tight_layout()
    return figure
