"""Where the Minkowski functionals and the pixel PDF fail: z per threshold and per bin, against the validation skies.

    python bench/experiments/gan_minkowski.py RUN DATASET [best|latest] [SETS]

Draws SETS (default 2) fresh latent sets of 1024 patches from the run's checkpoint
(default latest), puts each to the referee against the dataset's validation split (the
test skies stay for the verdict) and prints the failed tests, the Minkowski χ² with its
degrees of freedom and the z of V0, V1, V2 at each threshold (−2σ … 2σ), the pixel PDF's
χ² and z per bin, and the memorisation fraction against the expected one. Small z with a
large χ² is a pattern against the correlations between thresholds.
"""
import sys

import numpy as np

from cosmotrain.data import referee_side
from cosmotrain.inference import load_generator


def zs(test: dict) -> str:
    z = (np.array(test["samples"]) - np.array(test["reference"])) / np.array(test["sigma"])
    return f"chi2 {test['statistic']:.1f} on {test['dof']} dof, p {test['p_value']:.1e}; z " + \
        " ".join(f"{x:+.1f}" for x in z)


def main(run: str, data: str, which: str = "latest", sets: str = "2") -> None:
    reference = referee_side.build(data, "val")
    generator = load_generator(run, which)
    for s in range(int(sets)):
        verdict = referee_side.judge(reference, generator.sample(1024, seed=1000 + s))
        tests = verdict["tests"]
        print(f"set {s}: failed {verdict['failed']}")
        print("  minkowski (V0, V1, V2 at each threshold):", zs(tests["minkowski"]))
        print("  pixel PDF:", zs(tests["pixel_pdf"]))
        memo = tests["memorisation"]
        print(f"  memorisation: {memo['statistic']:.4f} near a training patch, {memo['expected_fraction']:.4f} "
              f"expected, p {memo['p_value']:.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
