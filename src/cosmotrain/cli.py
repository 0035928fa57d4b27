"""`cosmotrain <group> <verb>`: parse arguments, then hand over to a command's ``run``.

No logic lives here. Each command module in ``cosmotrain.commands`` exposes ``COMMANDS``, a
list of ``commands.Command``; a module must not import TensorFlow at import time, so
``--help`` stays instant. To add a command, write it there and list its module in ``MODULES``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from cosmotrain import __version__
from cosmotrain.commands import Command
from cosmotrain.errors import StorageError, UserError
from cosmotrain.files import storage_problem

GROUPS = {
    "data": "prepare datasets: synthetic or Galaxy Zoo galaxies, simulated CMB patches",
    "train": "train a model data-parallel (one process, mpirun, horovodrun or srun)",
    "evaluate": "evaluate a trained run on its test split",
    "sample": "generate large sample sets from a trained model across MPI ranks",
    "validate": "check a dataset's files, or a sample set's statistics against a reference dataset",
    "predict": "batch inference with a trained classifier across MPI ranks",
    "export": "export a trained classifier as a TensorFlow SavedModel",
    "spectra": "angular power spectra of a CMB patch dataset",
    "bench": "run a benchmark; the last stdout line is one JSON object",
    "scaling-report": "predict weak-scaling efficiency on a GPU cluster, 8 to 1024 GPUs",
}

MODULES = [
    "cosmotrain.commands.bench",
    "cosmotrain.commands.classifier",
    "cosmotrain.commands.cmb",
    "cosmotrain.commands.dataset",
    "cosmotrain.commands.galaxies",
    "cosmotrain.commands.gan",
    "cosmotrain.commands.sample",
    "cosmotrain.commands.scaling",
]

EPILOG = """examples:
  cosmotrain data galaxies --synthetic 6000 --out data/galaxies
  mpirun -np 2 cosmotrain train classifier --config configs/classifier_tiny.yaml \\
      --data data/galaxies --out runs/clf
  cosmotrain evaluate classifier --run runs/clf --tta
Every command takes --help; commands with a config take --config FILE and repeated
--set section.key=value."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cosmotrain", description="Data-parallel training of cosmology deep-learning models "
        "(galaxy CNN classifier, CMB DCGAN) with Horovod over MPI, on sharded HDF5 data.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cosmotrain {__version__}")
    groups = parser.add_subparsers(title="commands", dest="group", metavar="GROUP")
    group_parsers = {name: groups.add_parser(name, help=text, description=text,
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
                     for name, text in GROUPS.items()}
    verbs = {}
    for command in _commands():
        _add_command(group_parsers[command.group], verbs, command)
    for name, gp in group_parsers.items():
        gp.set_defaults(_parser=gp)
    return parser


def _add_command(group_parser: argparse.ArgumentParser, verbs: dict, command: Command) -> None:
    if command.verb is None:
        target = group_parser
    else:
        if command.group not in verbs:
            verbs[command.group] = group_parser.add_subparsers(title="verbs", dest="verb", metavar="VERB")
        target = verbs[command.group].add_parser(
            command.verb, help=command.help, description=command.description or command.help,
            formatter_class=argparse.RawDescriptionHelpFormatter)
    target.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    command.add_arguments(target)
    target.set_defaults(_run=command.run)


def _commands() -> list[Command]:
    found = []
    for name in MODULES:
        found.extend(importlib.import_module(name).COMMANDS)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        (getattr(args, "_parser", None) or parser).print_help(sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        return _fail(err)
    except Exception as err:  # a full disk or read-only folder that no command foresaw: still one line
        problem = storage_problem(err)
        if problem is None:
            raise
        where = getattr(err, "filename", None) or str(err).strip().splitlines()[0][:200]
        return _fail(StorageError(f"cannot write {where}: {problem}; free space or choose a writable output, "
                                  f"then rerun (files written completely before are intact)"))


def _fail(err: UserError) -> int:
    """One line on stderr; a multi-rank job is aborted so no rank waits for the others."""
    from cosmotrain import dist

    dist.fail(err)  # returns only when every rank met the mistake and printed it
    return 2


if __name__ == "__main__":
    sys.exit(main())
