"""A sample set against real patches in one figure: C_ℓ, pixel PDF, Minkowski functionals."""
from __future__ import annotations

import numpy as np

from cosmotrain.science.spectra import dl_from_cl


def summary(result: dict):
    """C_ℓ (D_ℓ) mean ± scatter, pixel PDF, and the three Minkowski functionals, real vs generated."""
    import matplotlib.pyplot as plt

    r = {k: np.asarray(v, dtype=float) if isinstance(v, list) else v for k, v in result.items()}
    fig, axes = plt.subplots(1, 5, figsize=(22, 4.2))
    ell = r["ell"]
    for name, mean, std, color, line in (("real", r["cl_real"], r["cl_real_std"], "k", "-"),
                                         ("generated", r["cl_gen"], r["cl_gen_std"], "C1", "--")):
        axes[0].plot(ell, dl_from_cl(ell, mean), color=color, linestyle=line, label=name)
        axes[0].fill_between(ell, dl_from_cl(ell, mean - std), dl_from_cl(ell, mean + std), color=color, alpha=0.2)
    axes[0].set(xlabel="ℓ", ylabel="D_ℓ [μK²]", title=f"C_ℓ: worst error/floor {r['cl_error_over_floor']:.2f}")
    centers = 0.5 * (r["hist_edges_uK"][1:] + r["hist_edges_uK"][:-1])
    for name, counts, style in (("real", r["hist_real"], "k-"), ("generated", r["hist_gen"], "C1--")):
        axes[1].semilogy(centers, np.where(counts > 0, counts, np.nan), style, label=name)
    axes[1].set(xlabel="T [μK]", ylabel="pixels per patch per bin", title=f"pixel PDF: KS/floor {r['ks_over_floor']:.2f}")
    nu = r["thresholds_sigma"]
    for i, name in enumerate(("V0", "V1", "V2")):
        ax = axes[2 + i]
        ax.errorbar(nu, r["mf_real"][i], r["mf_real_std"][i], fmt="k-", label="real", capsize=2)
        ax.errorbar(nu, r["mf_gen"][i], r["mf_gen_std"][i], fmt="C1--", label="generated", capsize=2)
        ax.set(xlabel="threshold ν [real pixel σ]", title=f"{name}: error/floor {r[f'mf_{name.lower()}_over_floor']:.2f}")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(f"{r['n_generated']} generated vs {r['n_reference']} real patches (mean ± scatter per patch)")
    fig.tight_layout()
    return fig
