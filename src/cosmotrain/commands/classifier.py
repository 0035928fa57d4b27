"""`cosmotrain train classifier`, `cosmotrain evaluate classifier` and `cosmotrain export classifier`."""
from __future__ import annotations

import argparse

from cosmotrain.commands import Command, train_command

TRAIN_HELP = """Train the galaxy CNN data-parallel: one process, or N ranks under mpirun, horovodrun or srun.

Writes RUN/config.yaml, RUN/checkpoints/, RUN/history.csv, RUN/tensorboard/, RUN/metrics.json.
On SIGUSR1 or SIGTERM (SLURM's time limit, pre-emption) the run checkpoints and exits with code 75;
--resume continues it exactly.

examples:
  cosmotrain train classifier --config configs/classifier_tiny.yaml --data data/galaxies --out runs/clf
  mpirun -np 4 cosmotrain train classifier --config configs/classifier.yaml --data data/galaxies --out runs/clf
  mpirun -np 4 cosmotrain train classifier --out runs/clf --resume"""

EVAL_HELP = """Evaluate a trained classifier run on its dataset's test split.

Writes RUN/eval/metrics.json (accuracy, per-class precision/recall/F1, confusion matrix,
the checkpoint, split and dataset), RUN/eval/confusion_matrix.png, RUN/eval/misclassified.png
and RUN/eval/curves.png (loss, accuracy and learning rate per epoch). --tta averages the
predictions over the 8 rotations/flips (D4) and writes metrics_tta.json,
confusion_matrix_tta.png and misclassified_tta.png beside the plain ones. An evaluation
already there is replaced only with --overwrite.

examples:
  cosmotrain evaluate classifier --run runs/clf
  mpirun -np 2 cosmotrain evaluate classifier --run runs/clf --tta
  cosmotrain evaluate classifier --run runs/clf --checkpoint runs/clf/checkpoints/ckpt-74 --out runs/clf/eval-74"""


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN", help="a run directory made by 'train classifier'")
    parser.add_argument("--tta", action="store_true", help="average predictions over the 8 D4 transforms")
    parser.add_argument("--checkpoint", default="best", metavar="best|latest|PATH",
                        help="which checkpoint to evaluate: best (lowest validation loss, the default), latest, or "
                             "a checkpoint prefix such as RUN/checkpoints/ckpt-500")
    parser.add_argument("--data", metavar="DATASET", help="evaluate on this dataset instead of the run's")
    parser.add_argument("--split", default=None, help="split to evaluate (default: the config's test split)")
    parser.add_argument("--out", default=None, metavar="DIR", help="where the outputs go (default: RUN/eval)")
    parser.add_argument("--overwrite", action="store_true", help="replace an evaluation of the same kind in DIR")


def run_evaluate(args: argparse.Namespace) -> int:
    from cosmotrain import dist, logs

    dist.init_horovod()
    logs.setup(args.verbose)
    from cosmotrain.evaluate_classifier import evaluate_classifier

    evaluate_classifier(args.run, tta=args.tta, which=args.checkpoint, data=args.data, split=args.split, out=args.out,
                        overwrite=args.overwrite)
    return 0


EXPORT_HELP = """Write a trained classifier as a TensorFlow SavedModel that plain TensorFlow loads.

The SavedModel's serving_default signature takes 'images', uint8 [N, H, W, 3] of any size, and
returns 'probabilities', float32 [N, 3] (round, edge-on, spiral); the preparation 'predict
classifier' applies to a folder of cut-outs (central --crop of the shorter side, resized to
the classifier's input) is inside it. DIR/cosmotrain.json records the checkpoint and classes.

  import tensorflow as tf
  model = tf.saved_model.load("exported/clf")
  probabilities = model.signatures["serving_default"](images=tf.constant(uint8_images))["probabilities"]

examples:
  cosmotrain export classifier --run runs/clf --out exported/clf
  cosmotrain export classifier --run runs/clf --checkpoint latest --crop 1 --out exported/clf-latest"""


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN", help="a run directory made by 'train classifier'")
    parser.add_argument("--out", required=True, metavar="DIR", help="the SavedModel folder to write")
    parser.add_argument("--checkpoint", default="best", metavar="best|latest|PATH",
                        help="which weights: best (lowest validation loss, the default), latest, or a checkpoint "
                             "prefix such as RUN/checkpoints/ckpt-500")
    parser.add_argument("--crop", type=float, default=0.5, metavar="F",
                        help="central fraction of each image's shorter side kept before resizing (default 0.5, as "
                             "'predict classifier' and the ingest; 1 for images already framed like the training set)")
    parser.add_argument("--overwrite", action="store_true", help="replace what is in DIR")


def run_export(args: argparse.Namespace) -> int:
    from cosmotrain import dist, logs

    dist.init_mpi()
    logs.setup(args.verbose)
    from cosmotrain.export_classifier import export_classifier

    export_classifier(args.run, args.out, args.checkpoint, args.crop, args.overwrite)
    return 0


COMMANDS = [
    train_command("classifier", "train the galaxy classifier (Horovod data-parallel)", TRAIN_HELP, "galaxies",
                  "train.epochs=30"),
    Command("evaluate", "classifier", "evaluate a classifier run on the test split", add_evaluate_arguments,
            run_evaluate, description=EVAL_HELP),
    Command("export", "classifier", "write a trained classifier as a TensorFlow SavedModel (preprocessing inside)",
            add_export_arguments, run_export, description=EXPORT_HELP),
]
