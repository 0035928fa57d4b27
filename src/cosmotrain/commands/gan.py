"""`cosmotrain train gan`: the DCGAN on CMB patches, with science monitors."""
from __future__ import annotations

import argparse

from cosmotrain.cli import Command, add_config_arguments

TRAIN_HELP = """Train the CMB DCGAN data-parallel: one process, or N ranks under mpirun, horovodrun or srun.

Losses J_D and J_G (non-saturating) of the tutorial, Adam(2e-4, beta1=0.5). Every
monitor.every steps the generator makes monitor.generated patches and the run logs, per
ell bin, the error of their mean C_ell over its sample-variance floor, the pixel KS distance
over its real-vs-real floor and Minkowski functionals; the lowest score is kept as
RUN/checkpoints/best. Writes RUN/config.yaml, checkpoints/, history.csv, tensorboard/,
monitors/, plots/ and metrics.json. On SIGUSR1 the run checkpoints and exits with code 75;
--resume continues it exactly.

examples:
  cosmotrain data cmb --config configs/cmb_tiny.yaml --out data/cmb_tiny
  mpirun -np 2 cosmotrain train gan --config configs/gan_tiny.yaml --data data/cmb_tiny --out runs/gan
  mpirun -np 2 cosmotrain train gan --out runs/gan --resume"""


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--data", metavar="DATASET", help="CMB dataset folder (default on --resume: the run's)")
    parser.add_argument("--out", required=True, metavar="RUN", help="run directory for checkpoints and logs")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN from its latest checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in RUN")


def run_train(args: argparse.Namespace) -> int:
    from cosmotrain import dist, logs

    dist.init_horovod()
    logs.setup(args.verbose)
    from cosmotrain.train import gan

    cfg = gan.resolve_config(args.config, args.overrides, args.data, args.out, args.resume)
    return gan.train(cfg, args.out, resume=args.resume, overwrite=args.overwrite)


COMMANDS = [
    Command("train", "gan", "train the CMB DCGAN (Horovod data-parallel) with science monitors",
            add_train_arguments, run_train, description=TRAIN_HELP),
]
