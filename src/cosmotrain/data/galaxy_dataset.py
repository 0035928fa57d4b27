"""`cosmotrain data galaxies`: a galaxies dataset, synthetic or from the Kaggle Galaxy Zoo files.

``make_dataset`` is the whole command, ``GalaxiesConfig`` its config. It runs as one process
or on N MPI ranks (``mpirun``, ``srun --mpi=pmix``): rank 0 checks the inputs and plans, every rank renders or decodes a contiguous slice of the galaxies, rank 0
gathers them in order, splits and writes the shards. The dataset is the same whatever the
rank count.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Literal

import numpy as np

from cosmotrain import config, dist, logs, rundir
from cosmotrain.config import ConfigError
from cosmotrain.data import galaxies, galaxy_zoo, shards
from cosmotrain.files import save_figure
from cosmotrain.plots import images

SPLITS = ("train", "val", "test")
MIN_SYNTHETIC = 30  # ten per class (simple generator), so every split gets every class

log = logs.get("data")


@dataclasses.dataclass(frozen=True)
class DatasetSection:
    """What every galaxies dataset shares: image size, split fractions and seed, shard size."""

    image_size: int = 64            # pixels per side of the stored images
    splits: tuple[float, ...] = (0.8, 0.1, 0.1)  # train, val, test fractions (per class)
    seed: int = 0                   # synthetic galaxies and the split both follow it
    samples_per_shard: int = 4096

    def __post_init__(self):
        if not 8 <= self.image_size <= 1024:
            raise ConfigError(f"dataset.image_size must be 8..1024 pixels, got {self.image_size}")
        if len(self.splits) != 3 or min(self.splits) <= 0 or abs(sum(self.splits) - 1.0) > 1e-6:
            raise ConfigError(f"dataset.splits must be three positive fractions (train, val, test) summing "
                              f"to 1, got {list(self.splits)}")
        if self.seed < 0:
            raise ConfigError(f"dataset.seed must be >= 0, got {self.seed}")
        if self.samples_per_shard < 1:
            raise ConfigError(f"dataset.samples_per_shard must be >= 1, got {self.samples_per_shard}")


@dataclasses.dataclass(frozen=True)
class GalaxyZooSection:
    """The Kaggle ingest: the vote threshold and the central crop taken before resizing."""

    threshold: float = 0.9          # a class needs at least this fraction of the votes; in (0.5, 1]
    crop: int = 212                 # central crop of the 424x424 JPEGs, in pixels, before resizing

    def __post_init__(self):
        try:
            galaxy_zoo.check_threshold(self.threshold)
        except ValueError as err:
            raise ConfigError(f"galaxy_zoo.threshold: {err}") from None
        if self.crop < 1:
            raise ConfigError(f"galaxy_zoo.crop must be a positive number of pixels, got {self.crop}")


@dataclasses.dataclass(frozen=True)
class SyntheticSection:
    """``--synthetic``: which generator, and the JPEG quality of the survey-like one.

    ``survey`` (the default) draws survey-like cut-outs labelled by simulated volunteers with
    the ``galaxy_zoo.threshold`` rule (galaxies no class keeps get label -1); ``simple`` is the
    first generator (a third of each class, all kept), kept for comparison.
    """

    generator: Literal["survey", "simple"] = "survey"
    jpeg_quality: int = 75          # the survey generator's JPEG quality (1..95, as Pillow takes it)

    def __post_init__(self):
        if not 1 <= self.jpeg_quality <= 95:
            raise ConfigError(f"synthetic.jpeg_quality must be 1..95, got {self.jpeg_quality}")


@dataclasses.dataclass(frozen=True)
class GalaxiesConfig:
    """A galaxies dataset's whole configuration (``configs/galaxies.yaml``): where the images
    come from (``galaxy_zoo`` or ``synthetic``), their size, splits and shards."""
    dataset: DatasetSection = dataclasses.field(default_factory=DatasetSection)
    galaxy_zoo: GalaxyZooSection = dataclasses.field(default_factory=GalaxyZooSection)
    synthetic: SyntheticSection = dataclasses.field(default_factory=SyntheticSection)


def make_dataset(source: dict, out: str, overwrite: bool, config_path: str | None, overrides: list[str]) -> None:
    """Make the dataset: ``source`` is {"synthetic": N} or {"galaxy_zoo": KAGGLE_DIR}; every rank calls this.

    Rank 0 checks the inputs and plans, every rank renders or decodes a contiguous share of
    the galaxies, rank 0 gathers them in order, splits and writes the shards.
    """
    ctx = dist.context()
    # Rank 0 alone reads and checks the inputs; a mistake is raised on every rank.
    plan = dist.root_computes(_plan, source, out, overwrite, config_path, overrides)
    start = time.perf_counter()
    if plan["source"] == "synthetic":
        fields, extra = _synthetic(plan)
    else:
        fields, extra = _galaxy_zoo(plan)
    if fields is not None:
        rundir.write_with(_write, plan, fields, extra)
        log.info("wrote %d galaxies to %s in %.1f s on %d rank%s", len(fields["ids"]), plan["out"],
                 time.perf_counter() - start, ctx.size, "s" if ctx.size > 1 else "")


def _plan(source: dict, out: str, overwrite: bool, config_path: str | None, overrides: list[str]) -> dict:
    """Everything the ranks need, checked before any work (rank 0)."""
    cfg = config.load(GalaxiesConfig, config_path, overrides)
    plan = {"cfg": cfg, "out": str(out), "config": config.to_dict(cfg)}
    if "synthetic" in source:
        if source["synthetic"] < MIN_SYNTHETIC:
            raise ConfigError(f"--synthetic {source['synthetic']}: make at least {MIN_SYNTHETIC} galaxies "
                              f"(ten per class, so every split holds every class)")
        plan.update(source="synthetic", n=source["synthetic"])
    else:
        plan.update(_galaxy_zoo_plan(source["galaxy_zoo"], cfg.galaxy_zoo.threshold, cfg.dataset.splits,
                                     cfg.dataset.seed))
    count = plan["n"] if "n" in plan else len(plan["ids"])
    shards.claim_output(out, overwrite, needed_bytes=count * sample_bytes(cfg.dataset.image_size))
    return plan


def sample_bytes(image_size: int) -> int:
    """Bytes one galaxy takes in a dataset: the image, label, vote fractions and id (HDF5 adds little)."""
    return image_size * image_size * 3 + 1 + 3 * 4 + 8


def _galaxy_zoo_plan(kaggle_dir: str, threshold: float, splits: tuple, seed: int) -> dict:
    """The galaxies of the Kaggle vote table that reach ``threshold``, in GalaxyID order."""
    table, image_dir = galaxy_zoo.locate(kaggle_dir)
    ids, votes = galaxy_zoo.read_solutions(table)
    labels = galaxy_zoo.assign_labels(votes, threshold)
    keep = np.flatnonzero(labels >= 0)
    keep = keep[np.argsort(ids[keep], kind="stable")]
    if not len(keep):
        raise ConfigError(f"no galaxy of {table} reaches the vote threshold {threshold}; "
                          f"lower galaxy_zoo.threshold (it must stay above 0.5)")
    _check_splits(stratified_split(labels[keep], splits, seed, SPLITS), f"galaxies of {table} above the threshold")
    return dict(source="galaxy-zoo", kaggle_dir=str(Path(kaggle_dir).resolve()), image_dir=str(image_dir),
                n_rows=len(ids), ids=ids[keep], labels=labels[keep], votes=votes[keep].astype(np.float32))


def _check_splits(parts: dict[str, np.ndarray], what: str) -> None:
    """Warn about an empty split: training, evaluation or prediction on it would refuse to start."""
    sizes = {name: len(idx) for name, idx in parts.items()}
    for name in [name for name, size in sizes.items() if size == 0]:
        log.warning("only %d %s: split '%s' will be empty (nothing to train, validate or evaluate on there); use "
                    "more galaxies or other dataset.splits fractions", sum(sizes.values()), what, name)


def _synthetic(plan: dict) -> tuple[dict | None, dict]:
    """Every rank renders its blocks of galaxies; rank 0 gets them all, in id order (None elsewhere)."""
    cfg, synthetic = plan["cfg"].dataset, plan["cfg"].synthetic
    start, stop = dist.share(plan["n"], galaxies.BLOCK)
    with logs.progress(total=stop - start, desc="rendering galaxies", unit="galaxy") as bar:
        mine = galaxies.synthetic_galaxies(start, stop, cfg.seed, cfg.image_size, progress=bar.update,
                                           generator=synthetic.generator, threshold=plan["cfg"].galaxy_zoo.threshold,
                                           quality=synthetic.jpeg_quality)
    parts = dist.gather_object(mine)
    if parts is None:
        return None, {}
    fields = {k: np.concatenate([p[k] for p in parts]) for k in mine}
    return fields, {"source_detail": {"generator": f"cosmotrain.data.galaxies ({synthetic.generator})",
                                      "n": plan["n"]}}


def _galaxy_zoo(plan: dict) -> tuple[dict | None, dict]:
    """Every rank decodes its share of the selected JPEGs; rank 0 keeps the readable ones (None elsewhere)."""
    cfg = plan["cfg"]
    start, stop = dist.share(len(plan["ids"]))
    with logs.progress(total=stop - start, desc="decoding JPEGs", unit="image") as bar:
        mine = galaxy_zoo.load_galaxies(plan["ids"][start:stop], plan["image_dir"], cfg.galaxy_zoo.crop,
                                        cfg.dataset.image_size, progress=bar.update)
    parts = dist.gather_object(mine)
    if parts is None:
        return None, {}
    pixels = np.concatenate([p[0] for p in parts])
    problems = [q for p in parts for q in p[1]]
    ok = np.array([q is None for q in problems], dtype=bool)
    skipped = galaxy_zoo.skipped_report(plan["ids"], problems)
    if skipped["count"]:
        log.warning("skipped %d unreadable images (%s); their GalaxyIDs are in manifest.json%s", skipped["count"],
                    ", ".join(f"{len(skipped[r])} {r}" for r in galaxy_zoo.UNREADABLE if skipped[r]),
                    f"; to keep the {len(skipped['too-small'])} smaller than the {cfg.galaxy_zoo.crop}-pixel crop, "
                    f"lower galaxy_zoo.crop" if skipped["too-small"] else "")
    fields = {"images": pixels[ok], "labels": plan["labels"][ok], "vote_fractions": plan["votes"][ok],
              "ids": plan["ids"][ok]}
    extra = {"source_detail": {"kaggle_dir": plan["kaggle_dir"], "rows": plan["n_rows"],
                               "selected": len(plan["ids"]), "vote_columns": list(galaxy_zoo.VOTE_COLUMNS)},
             "skipped": skipped}
    return fields, extra


def _write(plan: dict, fields: dict, extra: dict) -> None:
    """Split, then write the shards, a preview sheet and the manifest as one dataset (rank 0)."""
    cfg = plan["cfg"]
    if not len(fields["ids"]):
        raise ConfigError("none of the selected galaxies has a readable image; nothing to write")
    parts = stratified_split(fields["labels"], cfg.dataset.splits, cfg.dataset.seed, SPLITS)
    _check_splits(parts, "readable galaxies")
    splits = {name: {k: v[kept_first(fields["labels"], idx)] for k, v in fields.items()} for name, idx in parts.items()}
    simple = plan["source"] == "synthetic" and cfg.synthetic.generator == "simple"
    attrs = {"class_names": list(galaxies.CLASS_NAMES), "source": plan["source"],
             "threshold": 1.0 if simple else cfg.galaxy_zoo.threshold}
    counts = {name: np.bincount(s["labels"][s["labels"] >= 0], minlength=3).tolist() for name, s in splits.items()}
    unkept = {name: int((s["labels"] < 0).sum()) for name, s in splits.items()}
    train = splits["train"]
    title = f"{plan['out']} ({plan['source']}): the train split"
    preview = images.galaxy_preview(train["images"], train["labels"], list(galaxies.CLASS_NAMES), title)
    shards.write_dataset(plan["out"], "galaxies", splits, attrs, config=plan["config"], seed=cfg.dataset.seed,
                         samples_per_shard=cfg.dataset.samples_per_shard, extra={**extra, "class_counts": counts, "unkept_counts": unkept},
                         also=lambda folder: save_figure(preview, folder / "preview.png", dpi=100))
    for name, c in counts.items():
        log.info("%-5s %6d galaxies: %d round, %d edge-on, %d spiral, %d no class kept", name, sum(c) + unkept[name],
                 *c, unkept[name])


def kept_first(labels: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``idx`` (int [M], into ``labels``) with the kept galaxies (label >= 0) first, each part in its order.

    The schema's promise: in every split, galaxies no class keeps (label -1) come after the
    kept ones, so hard-label training reads a prefix of the split.
    """
    kept = np.asarray(labels)[idx] >= 0
    return np.concatenate([idx[kept], idx[~kept]])


def stratified_split(labels: np.ndarray, fractions: tuple[float, ...] = (0.8, 0.1, 0.1), seed: int = 0,
                     names: tuple[str, ...] = SPLITS) -> dict[str, np.ndarray]:
    """Indices (int64) into ``labels`` (int [N]) for each split, every class cut in ``fractions``.

    Each class is shuffled and cut separately, so every split has the classes in the same
    proportions; then each split's indices are shuffled, so that consecutive samples on disk
    are of mixed classes. Deterministic in ``seed``; the splits are disjoint and cover [0, N).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.cumsum(shards.split_counts(len(members), fractions))[:-1]
        for name, chunk in zip(names, np.split(members, cuts)):
            parts[name].append(chunk)
    return {name: rng.permutation(np.concatenate(p)) if p else np.zeros(0, np.int64)
            for name, p in parts.items()}


