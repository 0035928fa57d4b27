"""`cosmotrain data galaxies`: a galaxies dataset, synthetic or from the Kaggle Galaxy Zoo files."""
from __future__ import annotations

import argparse

from cosmotrain.commands import Command, add_config_arguments

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--synthetic", type=int, metavar="N", help="make N synthetic galaxies")
    source.add_argument("--galaxy-zoo", metavar="KAGGLE_DIR", help="ingest the Kaggle Galaxy Zoo files in KAGGLE_DIR")
    parser.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace what DIR already holds")
    add_config_arguments(parser, "galaxies", "galaxy_zoo.threshold=0.8")


def run(args: argparse.Namespace) -> int:
    from cosmotrain import dist, logs

    dist.init_mpi()
    logs.setup(args.verbose)
    from cosmotrain.data.galaxy_dataset import make_dataset

    source = {"synthetic": args.synthetic} if args.synthetic is not None else {"galaxy_zoo": args.galaxy_zoo}
    make_dataset(source, args.out, args.overwrite, args.config, args.overrides)
    return 0


COMMANDS = [Command("data", "galaxies", "make a galaxies dataset (synthetic or Kaggle Galaxy Zoo)",
                    add_arguments, run, description=HELP)]
