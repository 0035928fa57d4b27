"""Patches drawn from several runs at once: does a mixture of GANs pass the referee more often?

    python bench/experiments/gan_mixture.py DATASET RUN[,RUN...] [SETS]

Each of SETS (default 20) sets of ``SET_SIZE`` patches is split evenly between the final
checkpoints of the RUNs (the benchmark's latent seed), once through each run's calibration
filter and once without, and judged against DATASET's test skies like `bench gan-quality`.
Prints the whole referee's and each test's pass rate with its median p. Figures in
docs/gan.md ("More training skies").
"""
import sys
from pathlib import Path

import numpy as np

from cosmotrain.bench.gan_quality import LATENT_SEED, SET_SIZE, without_calibration
from cosmotrain.data import referee_side
from cosmotrain.inference import load_generator
from cosmotrain.science.referee import TESTS


def judge(reference, generators, sets: int) -> list[dict]:
    rng = np.random.default_rng(LATENT_SEED)
    parts = np.array_split(np.arange(SET_SIZE), len(generators))
    verdicts = []
    for _ in range(sets):
        made = [g(rng.standard_normal((len(p), g.latent_dim)).astype(np.float32)) for g, p in zip(generators, parts)]
        verdicts.append(referee_side.judge(reference, np.concatenate(made)))
    return verdicts


def main(dataset: str, runs: str, sets: int = 20) -> None:
    reference = referee_side.build(dataset, "test")
    generators = [load_generator(Path(r), "latest") for r in runs.split(",")]
    for label, members in (("filtered", generators), ("unfiltered", [without_calibration(g) for g in generators])):
        verdicts = judge(reference, members, sets)
        print(f"{label}: whole referee {np.mean([v['pass'] for v in verdicts]):.0%};", "  ".join(
            f"{t} {np.mean([v['tests'][t]['pass'] for v in verdicts]):.0%} "
            f"(p {np.median([v['tests'][t]['p_value'] for v in verdicts]):.2g})" for t in TESTS), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:4]))
