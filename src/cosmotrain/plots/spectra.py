"""Power spectra: a dataset's band powers against theory, a GAN's against held-out skies."""
from __future__ import annotations

import numpy as np

from cosmotrain.plots import GENERATED, GOAL, REAL, REAL_BAND, THEORY
from cosmotrain.science.spectra import dl_from_cl

DL_LABEL = r"$D_\ell = \ell(\ell+1)\,C_\ell/2\pi$  [$\mu$K$^2$]"
ELL_LABEL = r"multipole $\ell$"


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
    top.fill_between(ell, mean - std, mean + std, color=REAL_BAND, label="±1σ patch-to-patch scatter")
    top.plot(ell, mean, "o-", color=REAL, ms=3, label=f"patch mean ({result.get('n_patches', '?')} patches)")
    top.plot(ell, theory, "--", color=THEORY, label="theory (input $C_\\ell$ through beam, pixel windows, "
                                                    "apodisation)")
    top.set_ylabel(DL_LABEL)
    top.set_yscale("log")
    bottom.axhline(1.0, color=THEORY, lw=0.8, ls="--")
    bottom.plot(ell, mean / theory, "o-", color=REAL, ms=3)
    bottom.set_ylabel("mean / theory")
    bottom.set_xlabel(ELL_LABEL)
    valid = np.asarray(result.get("valid", np.ones(len(ell), bool)), dtype=bool)
    if not valid.all():
        start = float(result.get("ell_valid_max", ell[~valid].min()))
        for ax in (top, bottom):
            ax.axvspan(start, ell.max(), color="0.93", zorder=0)
        top.text(start, top.get_ylim()[0], " theory approximate here (map pixelisation)", va="bottom", fontsize=8)
    top.legend(fontsize=8)
    kind = "deconvolved " if result.get("deconvolved") else ""
    top.set_title(f"{result.get('dataset', 'patches')}, {result.get('split', '?')} split: {kind}flat-sky TT "
                  f"band powers", fontsize=10)
    fig.tight_layout()
    return fig


def run_spectra(result: dict, cl_goal: float, title: str, theory: np.ndarray | None = None):
    """A GAN monitor's D_ℓ of generated and real patches, and the per-bin error over its floor.

    ``result`` is a monitor's score (``science.monitors.score``): ``ell``, ``cl_real``,
    ``cl_gen`` and their per-patch scatter (C_ℓ, μK²), ``cl_ratio``, ``valid``, ...;
    ``theory`` the expected band powers of the dataset's patches (C_ℓ, μK², [nbins]) or None;
    ``title`` names the run, the step and the real patches compared with.
    """
    import matplotlib.pyplot as plt

    ell = np.asarray(result["ell"])
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 7), sharex=True, height_ratios=(3, 2))
    real, real_std = (dl_from_cl(ell, np.asarray(result[k])) for k in ("cl_real", "cl_real_std"))
    gen, gen_std = (dl_from_cl(ell, np.asarray(result[k])) for k in ("cl_gen", "cl_gen_std"))
    top.fill_between(ell, real - real_std, real + real_std, color=REAL_BAND, label="held-out skies: ±1σ per patch")
    top.plot(ell, real, "-", color=REAL, lw=1.5, label=f"held-out skies: mean of {result['n_reference']}")
    top.errorbar(ell, gen, gen_std, fmt="o", color=GENERATED, ms=4, capsize=3, lw=1,
                 label=f"generated: mean of {result['n_generated']} ±1σ per patch")
    if theory is not None:
        top.plot(ell, dl_from_cl(ell, theory), "--", color=THEORY, label="theory (beam and pixel window)")
    top.set_yscale("log")
    top.set_ylabel(DL_LABEL)
    top.legend(fontsize=8)
    top.set_title(f"{title}\nworst scored bin: error = {result['cl_error_over_floor']:.2f} × floor at "
                  f"ℓ ≈ {result['worst_bin_ell']:.0f} (goal ≤ {cl_goal:g})", fontsize=10)
    _error_panel(bottom, ell, np.asarray(result["cl_ratio"]), np.asarray(result["valid"], dtype=bool), cl_goal,
                 result["group_size"])
    figure.tight_layout()
    return figure


def _error_panel(ax, ell: np.ndarray, ratio: np.ndarray, valid: np.ndarray, goal: float, group: int) -> None:
    """Per-bin error/floor on a linear axis, with the floor (1) and the goal drawn and labelled."""
    ax.plot(ell[valid], ratio[valid], "o-", color=GENERATED, ms=4, label="generated (scored bins)")
    if not valid.all():
        ax.plot(ell[~valid], ratio[~valid], "x", color="0.5", ms=6, label="not scored (too few modes)")
    ax.axhline(1.0, color=REAL, lw=0.8, label="floor: real patches score 1")
    ax.axhline(goal, color=GOAL, ls="--", lw=1.2, label=f"goal ≤ {goal:g}")
    finite = ratio[np.isfinite(ratio)]
    ax.set_ylim(0, max(goal * 1.3, 1.1 * float(finite.max()) if finite.size else 0.0))
    ax.set_ylabel(f"$C_\\ell$ error / floor\n(means of M = {group} patches)")
    ax.set_xlabel(ELL_LABEL)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
