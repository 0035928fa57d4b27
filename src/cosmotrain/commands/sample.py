"""`cosmotrain sample gan`, `cosmotrain predict classifier`, `cosmotrain validate samples`.

Each runs as one process or as N ranks under mpirun / srun (plain MPI via mpi4py); the work
is in ``sample_gan``, ``predict_classifier`` and ``validate_samples``.
"""
from __future__ import annotations

import argparse
import json

from cosmotrain.commands import Command, add_batch_argument, add_split_argument

SAMPLE_HELP = """Generate N CMB patches (μK) with a trained GAN, across MPI ranks.

Sample i comes from the latent vector keyed by (--seed, i), so the set is the same whatever
the rank count. Rank r writes a contiguous range to DIR/part-0000r.h5 batch by batch; rank 0
then writes DIR/samples.h5 (a virtual dataset 'patches' [N,H,W] over the parts, readable with
plain h5py) and DIR/manifest.json (checkpoint sha256, config, seed, N, sha256 per part).

Rerunning the same command after a kill (any rank, any moment, or a full disk) computes only
what is missing; on a complete set it does nothing. Another command on a non-empty DIR is
refused unless --overwrite.

examples:
  cosmotrain sample gan --run runs/gan --n 10000 --out samples/gan
  mpirun -np 8 cosmotrain sample gan --run runs/gan --checkpoint latest --n 1000000 --out samples/gan
  srun --mpi=pmix cosmotrain sample gan --run runs/gan --n 1000000 --out samples/gan   # same files"""

PREDICT_HELP = """Class probabilities for a galaxies dataset split or a folder of cut-outs, across MPI ranks.

--images is a dataset made by 'data galaxies' (its --split) or a folder of JPEG, PNG or FITS
cut-outs of any size: each is prepared as the Galaxy Zoo ingest prepares the Kaggle JPEGs,
the central --crop of its shorter side (default 0.5: 212 of 424 px) resized bicubically to the
classifier's input (docs/classifier.md). Files that cannot be read are skipped, counted and
listed in DIR/manifest.json. Same machinery as 'sample gan': per-rank DIR/part-*.h5,
DIR/samples.h5 with virtual datasets 'ids' [N] (a dataset's galaxy ids; a folder's positions in
the sorted file list), 'probabilities' [N,3] and 'predicted' [N] (int8: 0 round, 1 edge-on,
2 spiral), DIR/manifest.json; resumable by rerunning the same command. Then DIR/predictions.csv:
id or file, p_round, p_edge_on, p_spiral, predicted (the class name).

examples:
  mpirun -np 4 cosmotrain predict classifier --run runs/clf --images data/galaxies --out predictions/test
  cosmotrain predict classifier --run runs/clf --images my_cutouts/ --out predictions/mine"""

VALIDATE_HELP = """The referee: are these patches statistically like real CMB patches they never saw?

SAMPLES is a sample-set folder ('sample gan'; every part's sha256 is checked) or any HDF5
file with a 'patches' float32 [N,H,W] dataset in μK_CMB (pixel size from its reso_arcmin
attribute or --reso-arcmin; it must be the reference's). Each test compares the samples
with split --split (default test: skies never trained on, nor seen by the monitors) of
DATASET: band powers (χ² with full covariance, and ring by ring), patch-to-patch scatter
(two-sided), per-patch σ/skewness/kurtosis and the spread of patch means, the pooled pixel
PDF, Minkowski functionals, memorisation (nearest training patch, 8 rotations/flips) and
diversity (pair correlations). Each reports its statistic, p-value, threshold and verdict;
the reference's patches are treated as correlated within a sky. Two disjoint real sets pass
each test >= 99 % and all of them >= 95 % of the time.

Writes FILE.json (default DIR/validation/validation.json, or FILE.validation.json beside a
file) with every test and a top-level "pass", and FILE.png. Exits 0 whatever the verdict;
with --strict, 1 when a test fails.

examples:
  cosmotrain validate samples samples/gan --reference data/cmb_tiny
  mpirun -np 4 cosmotrain validate samples samples/gan --reference data/cmb --out gan_referee.json --strict
  cosmotrain validate samples data/cmb_tiny/val-00000-of-00001.h5 --reference data/cmb_tiny   # real vs real"""


# ---------------------------------------------------------------- sample gan

def add_gan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN", help="a run directory made by 'train gan'")
    parser.add_argument("--checkpoint", default="best", metavar="best|latest|PATH",
                        help="which generator weights: best (lowest monitor score, the default), latest, or a "
                             "checkpoint prefix such as RUN/checkpoints/ckpt-2000")
    parser.add_argument("--n", type=int, required=True, metavar="N", help="number of samples")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder of the sample set")
    add_batch_argument(parser, 64, "samples")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="latent seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a different set already in DIR")


def run_gan(args: argparse.Namespace) -> int:
    from cosmotrain import dist, logs

    dist.init_mpi()
    logs.setup(args.verbose)
    from cosmotrain.sample_gan import sample_gan

    sample_gan(args.run, args.checkpoint, args.n, args.out, args.batch, args.seed, args.overwrite)
    return 0


# ---------------------------------------------------------------- predict classifier

def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN", help="a run directory made by 'train classifier'")
    parser.add_argument("--checkpoint", default="best", metavar="best|latest|PATH",
                        help="which weights: best (lowest validation loss, the default), latest, or a checkpoint "
                             "prefix such as RUN/checkpoints/ckpt-500")
    parser.add_argument("--tta", action="store_true", help="average over the 8 rotations/flips (D4) of each image")
    parser.add_argument("--images", required=True, metavar="PATH",
                        help="a galaxies dataset, or a folder of JPEG, PNG or FITS cut-outs of any size")
    add_split_argument(parser, "test", "a dataset PATH")
    parser.add_argument("--crop", type=float, default=0.5, metavar="F",
                        help="folder cut-outs: central fraction of the shorter side kept before resizing "
                             "(default 0.5, as the ingest crops the Kaggle JPEGs; 1 for cut-outs already framed "
                             "like the training images)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder of the prediction set")
    add_batch_argument(parser, 256, "images")
    parser.add_argument("--overwrite", action="store_true", help="replace a different set already in DIR")


def run_predict(args: argparse.Namespace) -> int:
    from cosmotrain import dist, logs

    dist.init_mpi()
    logs.setup(args.verbose)
    from cosmotrain.predict_classifier import predict_classifier

    predict_classifier(args.run, args.checkpoint, args.images, args.split, args.out, args.batch, args.tta,
                       args.overwrite, args.crop)
    return 0


# ---------------------------------------------------------------- validate samples

def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("samples", metavar="SAMPLES", help="a sample-set folder or an HDF5 file with 'patches'")
    parser.add_argument("--reference", required=True, metavar="DATASET", help="a CMB dataset made by 'data cmb'")
    add_split_argument(parser, "test", "the reference")
    parser.add_argument("--out", metavar="FILE.json", help="the report (default: DIR/validation/validation.json)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a test fails")
    parser.add_argument("--reso-arcmin", type=float, metavar="ARCMIN",
                        help="pixel size of SAMPLES if its file does not say it")
    add_batch_argument(parser, 256, "patches read")


def run_validate(args: argparse.Namespace) -> int:
    from cosmotrain import dist, logs

    dist.init_mpi()
    logs.setup(args.verbose)
    from cosmotrain.sampleset import check_counts
    from cosmotrain.validate_samples import validate_samples

    check_counts(1, args.batch, 0)
    report = validate_samples(args.samples, args.reference, args.split, args.out, args.batch, args.reso_arcmin)
    logs.result(json.dumps({"pass": report["pass"], "failed": report["failed"],
                            "p_values": {n: round(t["p_value"], 6) for n, t in report["tests"].items()}}))
    return 1 if args.strict and not report["pass"] else 0


COMMANDS = [
    Command("sample", "gan", "generate N patches with a trained GAN across MPI ranks", add_gan_arguments, run_gan,
            description=SAMPLE_HELP),
    Command("predict", "classifier", "classify a dataset's images or a folder of cut-outs across MPI ranks",
            add_predict_arguments, run_predict, description=PREDICT_HELP),
    Command("validate", "samples", "the referee: test a set of patches against held-out real ones",
            add_validate_arguments, run_validate, description=VALIDATE_HELP),
]
