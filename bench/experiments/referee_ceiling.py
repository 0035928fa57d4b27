"""How often would a perfect generator pass the whole referee against one dataset's test skies?

    python bench/experiments/referee_ceiling.py DATASET FRESH [SETS] [SIZE] [SPLIT]

FRESH is a CMB dataset of DATASET's config and seed with more skies (``--set maps.n_maps=40``):
a sky is drawn from ``(seed, index)`` alone (``data.sky``), so FRESH's skies whose indices
DATASET does not hold are skies of the same distribution that DATASET never saw. Each of
SETS (default 40) sets takes SIZE (default 1024) of their patches at random and is judged,
unlabelled, against DATASET's SPLIT skies (default ``test``) as `bench gan-quality` judges a generator's set
(``referee_side.judge``: the sky-level allowance of DATASET's training skies, memorisation
against its training patches). What a generator as good as the truth would score on that
exam; G2 asks for 80 % of sets. FRESH ``train`` takes DATASET's own training patches: a
generator that copies its training skies' distribution exactly (memorisation fails by
construction; the other tests say whether the skies G learns from can pass at all). Prints
the whole referee's and each test's pass rate with its median p, and each test sky's
patch-σ spread beside the training skies'. Figures in docs/gan.md ("More training skies",
"The spectrum of G's own making").
"""
import sys

import numpy as np

from cosmotrain.bench.gan_quality import shares
from cosmotrain.data import referee_side
from cosmotrain.data.reader import ShardSet, read_manifest


def fresh_patches(dataset: str, fresh: str) -> np.ndarray:
    """FRESH's patches of skies DATASET does not hold (``train``: DATASET's training patches)."""
    if fresh == "train":
        part = ShardSet(dataset, "train", kind="cmb")
        return part.read(0, part.n, ("patches",))["patches"]
    held = {k for skies in read_manifest(dataset)["skies"].values() for k in skies}
    out = []
    for split in read_manifest(fresh)["skies"]:
        part = ShardSet(fresh, split, kind="cmb")
        rows = part.read(0, part.n, ("patches", "sky"))
        out.append(rows["patches"][~np.isin(rows["sky"], list(held))])
    return np.concatenate(out)


def sigma_spread(dataset: str, split: str) -> dict[int, float]:
    """{sky: standard deviation of its patches' σ (μK)} for one split."""
    part = ShardSet(dataset, split, kind="cmb")
    rows = part.read(0, part.n, ("patches", "sky"))
    sigma = rows["patches"].reshape(part.n, -1).std(axis=1)
    return {int(k): round(float(sigma[rows["sky"] == k].std()), 2) for k in np.unique(rows["sky"])}


def main(dataset: str, fresh: str, sets: int = 40, size: int = 1024, split: str = "test") -> None:
    pool = fresh_patches(dataset, fresh)
    print(f"{len(pool)} patches of {'the training' if fresh == 'train' else 'unseen'} skies; sets of {size}")
    reference = referee_side.build(dataset, split)
    rng = np.random.default_rng(7)
    rates = shares([referee_side.judge(reference, pool[rng.choice(len(pool), size, replace=False)])
                    for _ in range(sets)])
    print(f"whole referee {rates['all']:.0%} of {sets} sets;", "  ".join(
        f"{t} {rates['tests'][t]:.0%} (p {rates['median_p'][t]:.2g})" for t in rates["tests"]))
    for part in ("train", split):
        spread = sigma_spread(dataset, part)
        print(f"patch-σ spread (μK), {part}: mean {np.mean(list(spread.values())):.2f};", spread)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:5]), *sys.argv[5:6])
