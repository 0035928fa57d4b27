"""The commands: one module per group, each listing its verbs in ``COMMANDS``.

A verb's ``run(args)`` starts the runtime it needs (``dist.init_horovod`` for training,
``dist.init_mpi`` for everything else), sets up logging and calls one function that does
the work; nothing else happens here. A module must not import TensorFlow at import time,
so ``--help`` stays instant. ``cli.MODULES`` lists the modules.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Command:
    """One ``cosmotrain GROUP [VERB]`` command."""

    group: str
    verb: str | None
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    description: str = ""


def add_config_arguments(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """The ``--config FILE`` and repeated ``--set a.b=c`` options every configured command takes."""
    parser.add_argument("--config", default=default, metavar="FILE",
                        help=f"YAML config (default: {default or 'built-in defaults'})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set train.epochs=5 (repeatable)")


def add_split_argument(parser: argparse.ArgumentParser, default: str, of: str) -> None:
    """``--split NAME``: which split of ``of`` (a dataset) the command reads."""
    parser.add_argument("--split", default=default, help=f"which split of {of} (default: {default})")


def add_batch_argument(parser: argparse.ArgumentParser, default: int, items: str) -> None:
    """``--batch B``: how many ``items`` a rank handles at a time."""
    parser.add_argument("--batch", type=int, default=default, metavar="B",
                        help=f"{items} per batch (default {default})")


def train_command(name: str, summary: str, description: str, dataset: str) -> Command:
    """``cosmotrain train NAME``: --config/--set, --data (a ``dataset`` folder), --out, --resume, --overwrite.

    Runs ``cosmotrain.train.NAME``: its ``CONFIG`` resolved (``rundir.resolve_config``), the runtime
    (Horovod with the config's ``allreduce`` settings, logging) started, then its ``train``.
    """
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_config_arguments(parser)
        parser.add_argument("--data", metavar="DATASET", help=f"{dataset} dataset folder (default on --resume: "
                                                              f"the run's)")
        parser.add_argument("--out", required=True, metavar="RUN", help="run directory for checkpoints and logs")
        parser.add_argument("--resume", action="store_true", help="continue the run in RUN from its latest checkpoint")
        parser.add_argument("--overwrite", action="store_true", help="replace a run already in RUN")

    def run(args: argparse.Namespace) -> int:
        from cosmotrain import dist, logs, rundir

        # The config comes first: its allreduce section must reach Horovod before it starts.
        # Loading it loads TensorFlow, so the thread counts are exported before that.
        dist.set_thread_env(dist.cores_per_rank(dist.env_local_size()))
        trainer = importlib.import_module(f"cosmotrain.train.{name}")
        cfg = rundir.resolve_config(trainer.CONFIG, args.config, args.overrides, args.data, args.out, args.resume)
        dist.init_horovod(allreduce=cfg.allreduce)
        logs.setup(args.verbose)
        return trainer.train(cfg, args.out, resume=args.resume, overwrite=args.overwrite)

    return Command("train", name, summary, add_arguments, run, description=description)
