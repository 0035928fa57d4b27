"""`cosmotrain data galaxies`: a galaxies dataset, synthetic or from the Kaggle Galaxy Zoo files.

Runs as one process or on N MPI ranks (``mpirun``, ``srun --mpi=pmix``): rank 0 checks the
inputs and plans, every rank renders or decodes a contiguous slice of the galaxies, rank 0
gathers them in order, splits and writes the shards. The dataset is the same whatever the
rank count.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from cosmotrain.cli import Command, add_config_arguments
from cosmotrain.config import ConfigError

HELP = """Make a galaxies dataset: HDF5 shards of 64x64 RGB images labelled round (0), edge-on (1)
or spiral (2), split train/val/test 80/10/10, plus manifest.json and preview.png.

  --synthetic N        N procedurally drawn galaxies, a third of each class (a few seconds
                       per 6000 on one core); the same N and seed always give the same data
  --galaxy-zoo DIR     the Kaggle "Galaxy Zoo - The Galaxy Challenge" files: DIR holds
                       training_solutions_rev1.csv and images_training_rev1/<GalaxyID>.jpg;
                       a galaxy is round when Class7.1 >= threshold, edge-on when Class2.1 >=
                       threshold, spiral when Class4.1 >= threshold (default 0.9), else dropped

examples:
  cosmotrain data galaxies --synthetic 6000 --out data/galaxies
  mpirun -np 4 cosmotrain data galaxies --galaxy-zoo ~/kaggle/galaxy-zoo --out data/gz \\
      --set galaxy_zoo.threshold=0.8 --set dataset.image_size=96"""

SPLITS = ("train", "val", "test")
MIN_SYNTHETIC = 30  # ten per class, so every split gets every class


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
        from cosmotrain.data.galaxy_zoo import check_threshold

        try:
            check_threshold(self.threshold)
        except ValueError as err:
            raise ConfigError(f"galaxy_zoo.threshold: {err}") from None
        if self.crop < 1:
            raise ConfigError(f"galaxy_zoo.crop must be a positive number of pixels, got {self.crop}")


@dataclasses.dataclass(frozen=True)
class GalaxiesConfig:
    dataset: DatasetSection = dataclasses.field(default_factory=DatasetSection)
    galaxy_zoo: GalaxyZooSection = dataclasses.field(default_factory=GalaxyZooSection)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--synthetic", type=int, metavar="N", help="make N synthetic galaxies")
    source.add_argument("--galaxy-zoo", metavar="KAGGLE_DIR", help="ingest the Kaggle Galaxy Zoo files in KAGGLE_DIR")
    parser.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace what DIR already holds")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from cosmotrain import dist, logs

    ctx = dist.init_mpi()
    log = logs.setup(args.verbose)
    # Rank 0 alone reads and checks the inputs; a mistake is raised on every rank.
    plan = dist.root_computes(_plan, args)
    start = time.perf_counter()
    if plan["source"] == "synthetic":
        fields, extra = _synthetic(plan, ctx)
    else:
        fields, extra = _galaxy_zoo(plan, ctx)
    if ctx.is_root:
        _write(plan, fields, extra)
        log.info("wrote %d galaxies to %s in %.1f s on %d rank%s", len(fields["ids"]), plan["out"],
                 time.perf_counter() - start, ctx.size, "s" if ctx.size > 1 else "")
    return 0


def _plan(args: argparse.Namespace) -> dict:
    """Everything the ranks need, checked before any work (rank 0)."""
    from cosmotrain import config
    from cosmotrain.data import galaxy_zoo, shards

    cfg = config.load(GalaxiesConfig, args.config, args.overrides)
    plan = {"cfg": cfg, "out": str(args.out), "config": config.to_dict(cfg)}
    if args.synthetic is not None:
        if args.synthetic < MIN_SYNTHETIC:
            raise ConfigError(f"--synthetic {args.synthetic}: make at least {MIN_SYNTHETIC} galaxies "
                              f"(ten per class, so every split holds every class)")
        plan.update(source="synthetic", n=args.synthetic)
    else:
        table, image_dir = galaxy_zoo.locate(args.galaxy_zoo)
        ids, votes = galaxy_zoo.read_solutions(table)
        labels = galaxy_zoo.assign_labels(votes, cfg.galaxy_zoo.threshold)
        keep = np.flatnonzero(labels >= 0)
        keep = keep[np.argsort(ids[keep], kind="stable")]
        if not len(keep):
            raise ConfigError(f"no galaxy of {table} reaches the vote threshold {cfg.galaxy_zoo.threshold}; "
                              f"lower galaxy_zoo.threshold (it must stay above 0.5)")
        plan.update(source="galaxy-zoo", kaggle_dir=str(Path(args.galaxy_zoo).resolve()), image_dir=str(image_dir),
                    n_rows=len(ids), ids=ids[keep], labels=labels[keep], votes=votes[keep].astype(np.float32))
    shards.claim_output(args.out, args.overwrite)
    return plan


def _slice(n: int, rank: int, size: int, align: int = 1) -> tuple[int, int]:
    """This rank's contiguous part [start, stop) of ``n`` items, cut at multiples of ``align``."""
    units = -(-n // align)
    lo, hi = units * rank // size, units * (rank + 1) // size
    return min(n, lo * align), min(n, hi * align)


def _synthetic(plan: dict, ctx) -> tuple[dict | None, dict]:
    """Every rank renders its blocks of galaxies; rank 0 gets them all, in id order."""
    from cosmotrain import dist, logs
    from cosmotrain.data import galaxies

    cfg = plan["cfg"].dataset
    start, stop = _slice(plan["n"], ctx.rank, ctx.size, galaxies.BLOCK)
    with logs.progress(total=stop - start, desc="rendering galaxies", unit="gal") as bar:
        mine = galaxies.synthetic_galaxies(start, stop, cfg.seed, cfg.image_size, progress=bar.update)
    parts = dist.gather_object(mine)
    if not ctx.is_root:
        return None, {}
    fields = {k: np.concatenate([p[k] for p in parts]) for k in mine}
    return fields, {"source_detail": {"generator": "cosmotrain.data.galaxies", "n": plan["n"]}}


def _galaxy_zoo(plan: dict, ctx) -> tuple[dict | None, dict]:
    """Every rank decodes its slice of the selected JPEGs; rank 0 keeps the readable ones."""
    from cosmotrain import dist, logs
    from cosmotrain.data import galaxy_zoo

    cfg = plan["cfg"]
    start, stop = _slice(len(plan["ids"]), ctx.rank, ctx.size)
    with logs.progress(total=stop - start, desc="decoding JPEGs", unit="img") as bar:
        mine = galaxy_zoo.load_galaxies(plan["ids"][start:stop], plan["image_dir"], cfg.galaxy_zoo.crop,
                                        cfg.dataset.image_size, progress=bar.update)
    parts = dist.gather_object(mine)
    if not ctx.is_root:
        return None, {}
    images = np.concatenate([p[0] for p in parts])
    problems = [q for p in parts for q in p[1]]
    ok = np.array([q is None for q in problems], dtype=bool)
    skipped = galaxy_zoo.skipped_report(plan["ids"], problems)
    if skipped["count"]:
        logs.get("data").warning("skipped %d unreadable images (%s); their GalaxyIDs are in manifest.json",
                                  skipped["count"], ", ".join(f"{len(skipped[r])} {r}" for r in
                                                              galaxy_zoo.UNREADABLE if skipped[r]))
    fields = {"images": images[ok], "labels": plan["labels"][ok], "vote_fractions": plan["votes"][ok],
              "ids": plan["ids"][ok]}
    extra = {"source_detail": {"kaggle_dir": plan["kaggle_dir"], "rows": plan["n_rows"],
                               "selected": len(plan["ids"]), "vote_columns": list(galaxy_zoo.VOTE_COLUMNS)},
             "skipped": skipped}
    return fields, extra


def _write(plan: dict, fields: dict, extra: dict) -> None:
    """Split, write the shards, the manifest and a preview sheet (rank 0)."""
    from cosmotrain import logs
    from cosmotrain.data import galaxies, shards

    cfg = plan["cfg"]
    if not len(fields["ids"]):
        raise ConfigError("none of the selected galaxies has a readable image; nothing to write")
    parts = galaxies.stratified_split(fields["labels"], cfg.dataset.splits, cfg.dataset.seed, SPLITS)
    splits = {name: {k: v[idx] for k, v in fields.items()} for name, idx in parts.items()}
    synthetic = plan["source"] == "synthetic"
    attrs = {"class_names": list(galaxies.CLASS_NAMES), "source": plan["source"],
             "threshold": 1.0 if synthetic else cfg.galaxy_zoo.threshold}
    counts = {name: np.bincount(s["labels"], minlength=3).tolist() for name, s in splits.items()}
    shards.write_dataset(plan["out"], "galaxies", splits, attrs, config=plan["config"], seed=cfg.dataset.seed,
                         samples_per_shard=cfg.dataset.samples_per_shard,
                         extra={**extra, "class_counts": counts})
    _save_preview(Path(plan["out"]) / "preview.png", splits["train"])
    log = logs.get("data")
    for name, c in counts.items():
        log.info("%-5s %6d galaxies: %d round, %d edge-on, %d spiral", name, sum(c), *c)


def _save_preview(path: Path, split: dict) -> None:
    """A PNG contact sheet of the first training galaxies of each class, written atomically."""
    from PIL import Image

    from cosmotrain.data import galaxies

    sheet = galaxies.preview_grid(split["images"], split["labels"], per_class=10)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(sheet).save(tmp, format="PNG")
    tmp.replace(path)


COMMANDS = [Command("data", "galaxies", "make a galaxies dataset (synthetic or Kaggle Galaxy Zoo)",
                    add_arguments, run, description=HELP)]
