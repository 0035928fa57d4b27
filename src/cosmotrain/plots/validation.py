"""The referee's figure: a sample set against held-out real patches, readable on its own."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cosmotrain.science.spectra import dl_from_cl

REAL, GEN = "#222222", "#d95f02"  # reference black, samples orange (distinct in grey and for colour-blind eyes)
MF_LABELS = (r"$V_0$ (area fraction)", r"$V_1$ [pixel$^{-1}$]", r"$V_2$ [pixel$^{-2}$]")


def referee_figure(report: dict):
    """D_ℓ, ratio, scatter ratio, the verdicts, the pixel PDF and V0/V1/V2 of samples against the reference."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(20, 8.5))
    tests, curves = report["tests"], report["curves"]
    ell = np.asarray(curves["ell"])
    _spectrum(axes[0, 0], ell, curves, tests["band_powers"])
    _ratio(axes[0, 1], ell, tests["band_powers"], r"mean $C_\ell$: samples / reference",
           "mean band power ratio (±1σ)")
    _ratio(axes[0, 2], ell, tests["scatter"], r"scatter of $C_\ell$: samples / reference",
           "patch-to-patch scatter ratio (±1σ)")
    _table(axes[0, 3], report)
    _pdf(axes[1, 0], curves, tests["pixel_pdf"])
    _functionals(axes[1, 1:], curves, tests["minkowski"])
    ref = report["reference"]
    verdict = "PASS" if report["pass"] else f"FAIL ({', '.join(report['failed'])})"
    name = "/".join(Path(report["samples"]["path"]).parts[-2:])
    fig.suptitle(f"referee: {report['samples']['n']} patches of {name} against split "
                 f"'{ref['split']}' of {Path(ref['path']).name} ({ref['n']} patches, skies {ref['skies']}): {verdict}",
                 fontsize=12, color="C2" if report["pass"] else "C3")
    fig.tight_layout()
    return fig


def _spectrum(ax, ell, curves, test) -> None:
    ref = np.asarray(curves["cl_reference"])
    std = np.asarray(curves["cl_reference_std"])
    ax.fill_between(ell, dl_from_cl(ell, ref - std), dl_from_cl(ell, ref + std), color=REAL, alpha=0.2,
                    label="reference ±1σ per patch")
    ax.plot(ell, dl_from_cl(ell, ref), color=REAL, label="reference mean")
    ax.plot(ell, dl_from_cl(ell, ref * np.asarray(test["ratio"])), "--", color=GEN, label="samples mean")
    ax.set(yscale="log", xlabel=r"multipole $\ell$", ylabel=r"$D_\ell = \ell(\ell+1)C_\ell/2\pi$ [μK$^2$]",
           title=f"band powers: χ² {_p(test)}")
    ax.legend(fontsize=8)


def _ratio(ax, ell, test, ylabel: str, title: str) -> None:
    ratio = np.asarray(test["ratio"])
    ax.axhline(1.0, color=REAL, lw=0.8)
    ax.errorbar(ell, ratio, yerr=test["ratio_sigma"], fmt="o", ms=3, color=GEN, capsize=2)
    if ratio.max() / max(ratio.min(), 1e-300) > 3:  # far off somewhere: a log scale keeps the rest readable
        ax.set_yscale("log")
    ax.set(xlabel=r"multipole $\ell$", ylabel=ylabel, title=f"{title}: {_p(test)}")


def _p(test: dict) -> str:
    """'p = 0.042', or 'p < 1e-15' where double precision ran out."""
    return f"p = {test['p_value']:.2g}" if test["p_value"] >= 1e-15 else "p < 1e-15"


def _table(ax, report: dict) -> None:
    ax.axis("off")
    lines = [f"{'test':14s} {'p-value':>9s}  verdict", ""]
    for name, test in report["tests"].items():
        lines.append(f"{name:14s} {test['p_value']:9.2g}  {'pass' if test['pass'] else 'FAIL'}")
    lines += ["", f"a test fails when p < {report['alpha_per_test']}", "(real vs real: each passes ≥ 99 %,",
              " all of them ≥ 95 % of the time)"]
    ax.text(0.0, 1.0, "\n".join(lines), family="monospace", fontsize=10, va="top")


def _pdf(ax, curves, test) -> None:
    edges = np.asarray(curves["pdf_edges_sigma"])
    centres = 0.5 * (edges[1:] + edges[:-1])
    width = np.diff(edges)
    for name, values, colour, style in (("reference", test["reference"], REAL, "-"),
                                        ("samples", test["samples"], GEN, "--")):
        ax.plot(centres, np.asarray(values) / width, style, color=colour, label=name)
    ax.set(yscale="log", xlabel=r"$(T - \bar T_{\rm patch}) / \sigma_{\rm patch}$", ylabel="pixel PDF",
           title=f"pooled pixel PDF: {_p(test)}")
    ax.legend(fontsize=8)


def _functionals(axes, curves, test) -> None:
    nu = np.asarray(curves["thresholds_sigma"])
    ref, gen = np.asarray(test["reference"]).reshape(3, -1), np.asarray(test["samples"]).reshape(3, -1)
    sigma = np.asarray(test["sigma"]).reshape(3, -1)
    for i, ax in enumerate(axes):
        ax.plot(nu, ref[i], "-", color=REAL, label="reference")
        ax.errorbar(nu, gen[i], yerr=sigma[i], fmt="o--", ms=3, color=GEN, capsize=2, label="samples (±1σ)")
        ax.set(xlabel=r"threshold $\nu$ [patch σ]", ylabel=MF_LABELS[i])
        ax.legend(fontsize=8)
    axes[0].set_title(f"Minkowski functionals: χ² {_p(test)}")
