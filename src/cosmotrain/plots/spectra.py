"""Power spectra: a dataset's band powers against theory, a GAN's against its training patches."""
from __future__ import annotations

import numpy as np

from cosmotrain.science.spectra import dl_from_cl


def dataset_band_powers(result: dict):
    """D_ℓ (μK²) of the patch mean with its 1σ patch-to-patch band, against theory.

    ``result`` holds ``ell``, ``mean``, ``std``, ``theory`` (C_ℓ, μK²) and optionally
    ``valid`` (bins where the theory is trusted) and ``n_patches``, as written by
    ``cosmotrain spectra``.
    """
    import matplotlib.pyplot as plt

    ell = np.asarray(result["ell"])
    mean, std, theory = (dl_from_cl(ell, np.asarray(result[k])) for k in ("mean", "std", "theory"))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=(3, 1))
    top.fill_between(ell, mean - std, mean + std, color="C0", alpha=0.25, label="1σ patch-to-patch scatter")
    top.plot(ell, mean, "o-", color="C0", ms=3, label=f"patch mean ({result.get('n_patches', '?')} patches)")
    top.plot(ell, theory, "k--", label="theory (beam, pixel windows, apodisation)")
    top.set_ylabel(r"$D_\ell = \ell(\ell+1)C_\ell/2\pi$ [μK²]")
    top.set_yscale("log")
    bottom.axhline(1.0, color="k", lw=0.8)
    bottom.plot(ell, mean / theory, "o-", color="C0", ms=3)
    bottom.set_ylabel("mean / theory")
    bottom.set_xlabel(r"multipole $\ell$")
    valid = np.asarray(result.get("valid", np.ones(len(ell), bool)), dtype=bool)
    if not valid.all():
        start = float(result.get("ell_valid_max", ell[~valid].min()))
        for ax in (top, bottom):
            ax.axvspan(start, ell.max(), color="0.88", zorder=0)
        top.text(start, top.get_ylim()[0], " theory approximate here (map pixelisation)", va="bottom", fontsize=8)
    top.legend(fontsize=8)
    title = "deconvolved " if result.get("deconvolved") else ""
    top.set_title(f"{title}flat-sky TT band powers of {result.get('dataset', 'patches')} ({result.get('split', '')})",
                  fontsize=9)
    fig.tight_layout()
    return fig


def run_spectra(result: dict, cl_goal: float):
    """A GAN monitor's D_ℓ of generated and real patches (mean ± 1σ per patch), and the per-bin error/floor."""
    import matplotlib.pyplot as plt

    ell = np.asarray(result["ell"])
    factor = ell * (ell + 1) / (2 * np.pi)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True, height_ratios=(2, 1))
    for name, colour in (("real", "k"), ("gen", "C3")):
        mean = np.asarray(result[f"cl_{name}"]) * factor
        std = np.asarray(result[f"cl_{name}_std"]) * factor
        label = "training patches" if name == "real" else "generated"
        top.plot(ell, mean, color=colour, label=f"{label} (mean)")
        top.fill_between(ell, mean - std, mean + std, color=colour, alpha=0.2, label=f"{label} ±1σ per patch")
    top.set_yscale("log")
    top.set_ylabel("D_ℓ = ℓ(ℓ+1)C_ℓ/2π [μK²]")
    top.legend(fontsize=8)
    top.set_title(f"step {result.get('step', '?')}: worst-bin error/floor {result['cl_error_over_floor']:.2f}")
    valid = np.asarray(result["valid"], dtype=bool)
    ratio = np.asarray(result["cl_ratio"])
    bottom.plot(ell[valid], ratio[valid], "o-", color="C3", label="valid bins")
    bottom.plot(ell[~valid], ratio[~valid], "x", color="0.5", label="not scored")
    bottom.axhline(1.0, color="k", lw=0.8)
    bottom.axhline(cl_goal, color="C2", ls="--", lw=0.8, label=f"goal {cl_goal}")
    bottom.set_yscale("log")
    bottom.set_ylabel(f"error / floor (M={result['group_size']})")
    bottom.set_xlabel("ℓ")
    bottom.legend(fontsize=8)
    return figure
