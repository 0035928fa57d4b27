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
from pathlib import Path
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


def add_config_arguments(parser: argparse.ArgumentParser, shipped: str, example: str,
                         default: str = "built-in defaults") -> None:
    """The ``--config FILE`` and repeated ``--set a.b=c`` options every configured command takes.

    ``shipped`` names a shipped config of this command (``gan_tiny``) and ``example`` an
    override it accepts (``train.steps=2000``), both shown in its help.
    """
    parser.add_argument("--config", metavar="FILE", type=config_file,
                        help=f"YAML config file, or the name of one cosmotrain ships, e.g. {shipped} (configs/; "
                             f"default: {default})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override one config value, e.g. --set {example} (repeatable)")


def config_file(value: str) -> str:
    """``--config``: a YAML file, or the name of a config cosmotrain ships (``gan_tiny``, ``gan_tiny.yaml``,
    ``configs/gan_tiny.yaml``).

    A file that exists is used as it is. Otherwise a shipped config of that name is: inside a
    container, or anywhere outside the checkout, ``--config gan_tiny`` finds the one in the
    package (``config.shipped``). Anything else is passed on, for the loader to name.
    """
    path = Path(value)
    if path.exists() or path.parent not in (Path("."), Path("configs")):
        return value
    from cosmotrain import config

    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    try:
        return str(config.shipped(name))
    except config.ConfigError:
        return value


def add_split_argument(parser: argparse.ArgumentParser, default: str, of: str) -> None:
    """``--split NAME``: which split of ``of`` (a dataset) the command reads."""
    parser.add_argument("--split", default=default, help=f"which split of {of} (default: {default})")


def add_batch_argument(parser: argparse.ArgumentParser, default: int, items: str) -> None:
    """``--batch B``: how many ``items`` a rank handles at a time."""
    parser.add_argument("--batch", type=int, default=default, metavar="B",
                        help=f"{items} per batch (default {default})")


def train_command(name: str, summary: str, description: str, dataset: str, example: str) -> Command:
    """``cosmotrain train NAME``: --config/--set (``example``: an override it takes), --data (a ``dataset``
    folder), --out, --resume, --overwrite.

    Runs ``cosmotrain.train.NAME``: its ``CONFIG`` resolved (``rundir.resolve_config``), the runtime
    (Horovod with the config's ``allreduce`` settings, logging) started, then its ``train``.
    """
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_config_arguments(parser, f"{name}_tiny", example, "the run's config.yaml on --resume, else built-in "
                                                              "defaults")
        parser.add_argument("--data", metavar="DATASET", help=f"{dataset} dataset folder (default on --resume: "
                                                              f"the run's)")
        parser.add_argument("--out", required=True, metavar="RUN", help="run directory for checkpoints and logs")
        parser.add_argument("--resume", action="store_true", help="continue the run in RUN from its latest checkpoint")
        parser.add_argument("--overwrite", action="store_true", help="replace a run already in RUN")

    def run(args: argparse.Namespace) -> int:
        from cosmotrain import dist, logs, placement, rundir

        # The config comes first: its allreduce section must reach Horovod before it starts.
        # Loading it loads TensorFlow, so the thread counts are exported before that.
        placement.set_thread_env(placement.cores_per_rank(placement.env_local_size()))
        trainer = importlib.import_module(f"cosmotrain.train.{name}")
        cfg = rundir.resolve_config(trainer.CONFIG, args.config, args.overrides, args.data, args.out, args.resume)
        dist.init_horovod(allreduce=cfg.allreduce)
        logs.setup(args.verbose)
        return trainer.train(cfg, args.out, resume=args.resume, overwrite=args.overwrite)

    return Command("train", name, summary, add_arguments, run, description=description)
