"""Patches drawn from several runs at once: does a mixture of GANs pass the referee more often?

    python bench/experiments/gan_mixture.py DATASET RUN[,RUN...] [SETS] [SPLIT]

Each of SETS (default 20) sets of ``SET_SIZE`` patches is split evenly between the final
checkpoints of the RUNs (the benchmark's latent seed), once through each run's calibration
filter and once without, and judged against DATASET's SPLIT skies (default ``test``) like
`bench gan-quality`. A RUN written ``-RUN`` has its patches negated about the training
mean (T → −T, a symmetry of the Gaussian CMB): ``RUN,-RUN`` is one G made symmetric at
sampling. Prints the whole referee's and each test's pass rate with its median p. Figures in
docs/gan.md ("More training skies").
"""
import sys
from pathlib import Path

import numpy as np

from cosmotrain.bench.gan_quality import LATENT_SEED, SET_SIZE, shares, without_calibration
from cosmotrain.data import referee_side
from cosmotrain.inference import load_generator


def judge(reference, generators, signs, sets: int) -> list[dict]:
    rng = np.random.default_rng(LATENT_SEED)
    parts = np.array_split(np.arange(SET_SIZE), len(generators))
    verdicts = []
    for _ in range(sets):
        made = [_signed(g(rng.standard_normal((len(p), g.latent_dim)).astype(np.float32)), g, sign)
                for g, sign, p in zip(generators, signs, parts)]
        verdicts.append(referee_side.judge(reference, np.concatenate(made)))
    return verdicts


def _signed(patches: np.ndarray, generator, sign: int) -> np.ndarray:
    """The patches, or their mirror about the training mean (``sign`` −1)."""
    offset = generator.transform.offset_uK
    return patches if sign > 0 else 2.0 * offset - patches


def main(dataset: str, runs: str, sets: int = 20, split: str = "test") -> None:
    reference = referee_side.build(dataset, split)
    specs = runs.split(",")
    signs = [-1 if r.startswith("-") else 1 for r in specs]
    generators = [load_generator(Path(r.lstrip("-")), "latest") for r in specs]
    for label, members in (("filtered", generators), ("unfiltered", [without_calibration(g) for g in generators])):
        rates = shares(judge(reference, members, signs, sets))
        print(f"{label}: whole referee {rates['all']:.0%};", "  ".join(
            f"{t} {rates['tests'][t]:.0%} (p {rates['median_p'][t]:.2g})" for t in rates["tests"]), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:4]), *sys.argv[4:5])
