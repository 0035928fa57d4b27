"""`cosmotrain validate dataset`: check a dataset's files against its manifest."""
from __future__ import annotations

import argparse

from cosmotrain.commands import Command

HELP = """Check every file of a dataset made by 'cosmotrain data galaxies' or 'cosmotrain data cmb':
each shard's sha256 and size against manifest.json, its HDF5 datasets (dtypes, shapes, counts)
and its values (labels -1..2, vote fractions in [0, 1], no NaN or inf). One line per problem,
naming the file; the last line sums up. Exit code 0 when every file is intact, 1 otherwise.
Runs on N MPI ranks too (each checks every N-th file).

Training, evaluation and prediction check the sha256 themselves when they open a dataset,
skipping files verified before and unchanged since; this command hashes everything.

examples:
  cosmotrain validate dataset data/galaxies
  mpirun -np 4 cosmotrain validate dataset data/cmb"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="DIR", help="a dataset folder (it holds manifest.json)")


def run(args: argparse.Namespace) -> int:
    from cosmotrain import dist, logs

    dist.init_mpi()
    logs.setup(args.verbose)
    from cosmotrain.validate_dataset import validate_dataset

    return validate_dataset(args.dataset)


COMMANDS = [Command("validate", "dataset", "check a dataset's files against its manifest (sha256, schema, values)",
                    add_arguments, run, description=HELP)]
