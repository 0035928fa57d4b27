"""What the classifier trainer reads: the train and val splits of a galaxies dataset, checked.

Galaxies no class keeps (label -1) come after the kept ones in every split (the dataset
writer's promise, checked here), so hard-label training (``train.loss: labels``) reads the
kept prefix of the training split and the vote loss (``votes``) all of it. Validation always
reads the whole split: accuracy over its kept galaxies, the vote RMSE over all.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from cosmotrain import dist, logs, placement
from cosmotrain.data import epochs, staging
from cosmotrain.data.reader import ShardSet
from cosmotrain.errors import UserError

if TYPE_CHECKING:
    from cosmotrain.train.classifier import ClassifierConfig

log = logs.get("train")

FIELDS = {"labels": ("images", "labels"), "votes": ("images", "labels", "vote_fractions")}  # read per train.loss
EVAL_FIELDS = ("images", "labels", "vote_fractions")


@dataclasses.dataclass
class TrainData:
    """The opened splits and what training needs to know about them.

    ``train`` is the part of the training split the loss uses: its kept galaxies (a prefix)
    for ``train.loss: labels``, all of it for ``votes``; ``val`` is always the whole split.
    """

    train: ShardSet
    val: ShardSet
    image_shape: tuple
    class_names: list
    steps: int
    warnings: list


def open_data(cfg: ClassifierConfig) -> TrainData:
    """Open and check the train/val splits before any work (same answer on every rank)."""
    ctx = dist.context()
    train = ShardSet(cfg.data.path, cfg.data.train_split, kind="galaxies", shared=True)
    val = ShardSet(cfg.data.path, cfg.data.val_split, kind="galaxies", shared=True)
    for split in (train, val):
        split.check_values(("labels", "vote_fractions"))
    image_shape = train.sample_shape("images")
    if val.n and val.sample_shape("images") != image_shape:
        raise UserError(f"{cfg.data.path}: val images are {val.sample_shape('images')}, train images {image_shape}")
    names = list(train.attrs.get("class_names", ["round", "edge-on", "spiral"]))
    labels = train.read(0, train.n, ("labels",))["labels"]
    kept = kept_count(labels, len(names), f"{train.root} ({train.split} split)")
    whole = train.n
    if cfg.train.loss == "labels":
        train = train.head(kept)
    steps = epochs.split_steps(train, cfg.train.batch_size, ctx.size)
    epochs.per_rank_count(val.n, ctx.size, f"{val.root} ({val.split} split)")
    warnings = _missing_class_warnings(labels, names)
    dropped = train.n - ctx.size * steps * cfg.train.batch_size
    log.info("data: %d train galaxies (%d kept by a class) / %d val images of %s; loss on %s: %d steps per "
             "epoch, %d samples per epoch unused", whole, kept, val.n, "x".join(map(str, image_shape)),
             "the kept galaxies" if cfg.train.loss == "labels" else "the vote fractions of all", steps, dropped)
    if cfg.data.stage_dir:
        train, val = _staged(cfg, train, val)
    return TrainData(train, val, image_shape, names, steps, warnings)


def kept_count(labels: np.ndarray, n_classes: int, where: str) -> int:
    """How many galaxies of a split a class keeps (labels 0..n_classes-1), checking they come first.

    ``labels`` int8 [N]; -1 marks a galaxy no class keeps (vote fractions only). Anything
    else, or a kept galaxy after an unkept one (the writer puts them first), is a UserError.
    """
    labels = np.asarray(labels, np.int64)
    bad = (labels < -1) | (labels >= n_classes)
    if bad.any():
        raise UserError(f"{where}: label {labels[bad][0]} is not a class (0..{n_classes - 1}) or -1 (no class kept); "
                        f"regenerate the dataset")
    kept = int((labels >= 0).sum())
    if (labels[:kept] < 0).any():
        raise UserError(f"{where}: galaxies no class keeps (label -1) are not after the kept ones; regenerate the "
                        f"dataset with 'cosmotrain data galaxies'")
    return kept


def _staged(cfg: ClassifierConfig, train: ShardSet, val: ShardSet) -> tuple[ShardSet, ShardSet]:
    """The splits again, from node-local copies of the shards each node's ranks read (``data.stage_dir``).

    A rank reads its slices of the training split in every epoch and its share of the
    validation split (``rank_share``).
    """
    size, seed = dist.context().size, cfg.train.seed
    reads = {train.split: lambda r: [run for e in range(cfg.train.epochs)
                                     for run in epochs.epoch_runs(train.n, r, size, seed, e)],
             val.split: lambda r: [placement.split_range(val.n, r, size)]}
    root = staging.stage(cfg.data.path, cfg.data.stage_dir, reads)
    staged = ShardSet(root, train.split, kind="galaxies", shared=True).head(train.n)
    return staged, ShardSet(root, val.split, kind="galaxies", shared=True)


def _missing_class_warnings(labels: np.ndarray, names: list) -> list[str]:
    counts = np.bincount(labels[labels >= 0].astype(np.int64), minlength=len(names))
    out = [f"class '{names[c]}' ({c}) has no samples in the training split; the model cannot learn it"
           for c in range(len(names)) if counts[c] == 0]
    for text in out:
        logs.root_warning(log, text)
    return out


def rank_share(split: ShardSet, batch: int, fields: tuple = EVAL_FIELDS):
    """This rank's contiguous share of ``split`` (``dist.share``), in order, in batches of up to ``batch``."""
    start, stop = dist.share(split.n)
    for s in range(start, stop, batch):
        data = split.read(s, min(s + batch, stop), fields)
        yield tuple(data[f] for f in fields)
