"""The referee's real side of a CMB dataset, and the referee on patches held in memory.

``build`` reads a reference split (skies the generator never saw: ``test`` for the
verdict, ``val`` while training) and the training split, and measures what the referee
(``science.referee``) compares samples with: the probe fixed from the reference patches,
the reference's and the training split's feature sums per sky, the reference's
nearest-neighbour distances to the training patches (memorisation), pair correlations of
reference patches from different skies (diversity). ``judge`` runs every test on a set of
generated patches float [N, H, W] μK in one process: what ``validate samples`` does across
ranks for a file, for the GAN's best-checkpoint choice and ``bench gan-quality``'s many
latent sets. ``badness`` folds a verdict into one number for choosing a checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cosmotrain.data.reader import ShardSet, read_manifest
from cosmotrain.errors import UserError
from cosmotrain.science import referee
from cosmotrain.science import referee_features as rf

CHUNK = 512


class Reference(NamedTuple):
    """The real side: probe, sums of reference and training split, memorisation and pairs."""

    probe: rf.Probe
    moments: rf.Moments
    train: rf.Moments
    distances: np.ndarray   # float64 [n]: each reference patch's distance to its nearest training patch
    pairs: np.ndarray       # float64 [n // 2]: pixel correlations of reference pairs from different skies
    candidates: np.ndarray  # float32 [8·n_train, 64]: the training patches' block means, 8 rotations/flips
    info: dict


def build(root: str | os.PathLike, split: str) -> Reference:
    """Everything the referee needs from split ``split`` and the training split of CMB dataset ``root``."""
    splits = read_manifest(root).get("splits", {})
    for name, role in ((split, "reference"), ("train", "training split (memorisation, sky variance)")):
        if name not in splits:
            raise UserError(f"{root} has no '{name}' split for the {role} (it has: {', '.join(splits)}); make "
                            f"the dataset with splits.{name} > 0 or pass another --split")
    real, train = ShardSet(root, split, kind="cmb"), ShardSet(root, "train", kind="cmb")
    sample = real.read(0, real.n, ("patches", "sky"))
    patches, sky = sample["patches"].astype(np.float64), sample["sky"].astype(np.int64)
    probe = rf.make_probe(patches, float(real.attrs["reso_arcmin"]))
    candidates, train_moments = _training_side(train, probe)
    order = rf.cross_sky_order(sky, seed=1)
    info = {"path": str(Path(root).resolve()), "split": split, "n": int(real.n), "skies": sorted(set(sky.tolist())),
            "train_n": int(train.n), "train_skies": int(len(train_moments.sky_n)), "reso_arcmin": probe.binning.reso_arcmin}
    return Reference(probe, rf.Moments.of(rf.features(patches, probe), sky, np.unique(sky)), train_moments,
                     rf.nearest_distances(rf.coarse(patches), candidates), rf.pair_correlations(patches[order]),
                     candidates, info)


def _training_side(train: ShardSet, probe: rf.Probe) -> tuple[np.ndarray, rf.Moments]:
    """The training patches' block means in their 8 rotations/flips, and their per-sky feature sums."""
    blocks, parts = [], []
    skies = np.unique(train.read(0, train.n, ("sky",))["sky"])
    for a in range(0, train.n, CHUNK):
        chunk = train.read(a, min(a + CHUNK, train.n), ("patches", "sky"))
        blocks.append(rf.coarse(chunk["patches"]))
        parts.append(rf.Moments.of(rf.features(chunk["patches"], probe), chunk["sky"], skies))
    total = rf.Moments(sum(p.n for p in parts), sum(p.total for p in parts), sum(p.outer for p in parts),
                       sum(p.sky_n for p in parts), sum(p.sky_sum for p in parts))
    return rf.d4(np.concatenate(blocks)), total


def judge(ref: Reference, patches: np.ndarray) -> dict:
    """The referee's verdict (``referee.run``) on generated patches float [N, H, W] μK, N >= 4, one process.

    Patches the tests cannot measure (constant patches, as an untrained generator makes,
    give non-finite features and covariances) fail every test with p = 0.
    """
    x = np.asarray(patches, dtype=np.float64)
    if x.shape[1:] != ref.probe.shape or len(x) < 4:
        raise ValueError(f"patches must be [N >= 4, {ref.probe.shape[0]}, {ref.probe.shape[1]}], got {x.shape}")
    with np.errstate(all="ignore"):
        rows = rf.features(x, ref.probe)
        near = int(np.sum(rf.nearest_distances(rf.coarse(x), ref.candidates) < referee.memo_threshold(ref.distances)))
        if np.isfinite(rows).all():
            try:
                return referee.run(rf.Moments.of(rows), ref.moments, ref.train, ref.probe, near, ref.distances,
                                   rf.pair_correlations(x), ref.pairs)
            except np.linalg.LinAlgError:
                pass
    tests = {name: referee.verdict(name, np.nan, 0.0, "not measurable: the patches' features or their "
                                   "covariance are not finite") for name in referee.TESTS}
    return {"pass": False, "alpha_per_test": referee.ALPHA, "tests": tests, "failed": list(referee.TESTS)}


def badness(verdict: dict) -> float:
    """One number for a verdict, lower is better, 0 when every test passes: Σ over tests of log10(α / p), p < α.

    How many decades each failing test's p-value lies below the threshold α, added up: a
    checkpoint failing one test by a hair beats one failing three by far.
    """
    return float(sum(np.log10(t["threshold"] / max(t["p_value"], 1e-300)) for t in verdict["tests"].values()
                     if not t["pass"]))
