"""`cosmotrain train classifier` and `cosmotrain evaluate classifier`."""
from __future__ import annotations

import argparse

from cosmotrain.cli import Command, add_config_arguments

TRAIN_HELP = """Train the galaxy CNN data-parallel: one process, or N ranks under mpirun, horovodrun or srun.

Writes RUN/config.yaml, RUN/checkpoints/, RUN/history.csv, RUN/tensorboard/, RUN/metrics.json.
On SIGUSR1 the run checkpoints and exits with code 75; --resume continues it exactly.

examples:
  cosmotrain train classifier --config configs/classifier_tiny.yaml --data data/galaxies --out runs/clf
  mpirun -np 4 cosmotrain train classifier --config configs/classifier.yaml --data data/galaxies --out runs/clf
  mpirun -np 4 cosmotrain train classifier --out runs/clf --resume"""

EVAL_HELP = """Evaluate a trained classifier run on its dataset's test split.

Writes RUN/eval/metrics.json (accuracy, per-class precision/recall/F1, confusion matrix),
RUN/eval/confusion_matrix.png, RUN/eval/curves.png (loss and accuracy per epoch) and
RUN/eval/misclassified.png. --tta averages the predictions over the 8 rotations/flips (D4)."""


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--data", metavar="DATASET", help="galaxies dataset folder (default on --resume: the run's)")
    parser.add_argument("--out", required=True, metavar="RUN", help="run directory for checkpoints and logs")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN from its latest checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in RUN")


def run_train(args: argparse.Namespace) -> int:
    from cosmotrain import dist, logs

    dist.init_horovod()
    logs.setup(args.verbose)
    from cosmotrain.train import classifier

    cfg = classifier.resolve_config(args.config, args.overrides, args.data, args.out, args.resume)
    return classifier.train(cfg, args.out, resume=args.resume, overwrite=args.overwrite)


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN", help="a run directory made by 'train classifier'")
    parser.add_argument("--tta", action="store_true", help="average predictions over the 8 D4 transforms")
    parser.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                        help="which checkpoint to evaluate (default: best by validation loss)")
    parser.add_argument("--data", metavar="DATASET", help="evaluate on this dataset instead of the run's")
    parser.add_argument("--split", default=None, help="split to evaluate (default: the config's test split)")
    parser.add_argument("--out", default=None, metavar="DIR", help="where the outputs go (default: RUN/eval)")


def run_evaluate(args: argparse.Namespace) -> int:
    from cosmotrain import dist, logs

    dist.init_horovod()
    logs.setup(args.verbose)
    from cosmotrain import evaluate

    evaluate.evaluate_classifier(args.run, tta=args.tta, which=args.checkpoint, data=args.data, split=args.split,
                                 out=args.out)
    return 0


COMMANDS = [
    Command("train", "classifier", "train the galaxy classifier (Horovod data-parallel)", add_train_arguments,
            run_train, description=TRAIN_HELP),
    Command("evaluate", "classifier", "evaluate a classifier run on the test split", add_evaluate_arguments,
            run_evaluate, description=EVAL_HELP),
]
