"""`cosmotrain sample gan`, `cosmotrain predict classifier`, `cosmotrain validate samples`.

Each runs as one process or as N ranks under mpirun / srun (plain MPI via mpi4py). The
heavy lifting is in ``cosmotrain.sample`` (the engine) and ``cosmotrain.validate``; this
module parses, loads the model, describes the set (``sample.Spec``) and hands over.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cosmotrain.cli import Command
from cosmotrain.errors import UserError

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

PREDICT_HELP = """Class probabilities for every image of a galaxies dataset split, across MPI ranks.

Same machinery as 'sample gan': per-rank DIR/part-*.h5, DIR/samples.h5 with virtual datasets
'ids' [N] (carried from the images), 'probabilities' [N,3] and 'predicted' [N] (int8: 0 round,
1 edge-on, 2 spiral), DIR/manifest.json; resumable by rerunning the same command.

examples:
  mpirun -np 4 cosmotrain predict classifier --run runs/clf --images data/galaxies --out predictions/test"""

VALIDATE_HELP = """Compare a sample set's statistics with a reference CMB dataset, across MPI ranks.

Checks the parts' sha256 against the manifest, then computes (sums over ranks) the C_ℓ mean
and scatter, the pixel PDF with a two-sample KS test, and the Minkowski functionals of the
samples and of the reference. Writes OUT/validation.json and OUT/validation.png
(OUT defaults to DIR/validation).

examples:
  mpirun -np 4 cosmotrain validate samples samples/gan --reference data/cmb"""


# ---------------------------------------------------------------- sample gan

def add_gan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN", help="a run directory made by 'train gan'")
    parser.add_argument("--checkpoint", default="best", metavar="best|latest|PATH",
                        help="which generator weights (default: best)")
    parser.add_argument("--n", type=int, required=True, metavar="N", help="number of samples")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder of the sample set")
    parser.add_argument("--batch", type=int, default=64, metavar="B", help="samples per batch (default 64)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="latent seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a different set already in DIR")


def run_gan(args: argparse.Namespace) -> int:
    from cosmotrain import dist, logs, sample

    ctx = dist.init_mpi()
    logs.setup(args.verbose)
    _check_counts(args.n, args.batch, args.seed)
    generator, dim, sha = _load_generator(args.run, args.checkpoint)
    probe = generator(sample.latents(args.seed, 0, 1, dim))  # the patch shape, before any file is touched
    spec = sample.Spec(
        "gan-samples", args.n, args.batch, {"patches": ("float32", tuple(probe.shape[1:]))},
        identity={"model_sha256": sha, "seed": args.seed, "latent_dim": dim, "latents": sample.LATENTS},
        attrs={"patches": {"units": "uK_CMB"}})
    extra = {"seed": args.seed, "model": {"run": str(Path(args.run).resolve()), "checkpoint": args.checkpoint,
                                          "sha256": sha},
             "config": {"sampling": {"n": args.n, "batch": args.batch, "seed": args.seed},
                        "run": _run_config(args.run)}}
    manifest = sample.produce(args.out, spec, sample.gan_compute(generator, dim, args.seed),
                              overwrite=args.overwrite, extra=extra, desc="sampling")
    if ctx.is_root:
        _report(args.out, manifest, "patches")
    return 0


def _check_counts(n: int, batch: int, seed: int) -> None:
    """Refuse bad numbers before anything is loaded (every rank sees the same answer)."""
    if n <= 0:
        raise UserError(f"--n {n}: the number of samples must be positive; pass --n N with N >= 1")
    if batch <= 0:
        raise UserError(f"--batch {batch}: the batch size must be positive; pass --batch B with B >= 1")
    if not 0 <= seed < 2**63:
        raise UserError(f"--seed {seed}: the seed must be an integer in [0, 2^63); pass --seed S")


def _load_generator(run: str, checkpoint: str):
    """(generator z → μK patches [B,H,W] float32, latent dim, checkpoint sha256) of a GAN run."""
    from cosmotrain import dist

    if not Path(run).is_dir():
        raise UserError(f"run folder {run} does not exist; pass --run RUN made by 'cosmotrain train gan'")
    dist.configure_tensorflow()  # thread pools and GPU pinning, before TensorFlow starts
    from cosmotrain.train.gan import load_generator

    return load_generator(run, checkpoint=checkpoint)


def _run_config(run: str) -> dict:
    import yaml

    path = Path(run) / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def _report(out: str, manifest: dict, noun: str) -> None:
    """The command's last stdout line: where the set is and how fast this run made it."""
    timing = manifest["timing"]
    made = (f"{timing['produced']} made now at {timing['samples_per_second']:.0f}/s on {timing['ranks']} rank(s)"
            if timing["produced"] else "already complete, nothing to do")
    print(f"{manifest['n']} {noun} in {Path(out) / manifest['samples']} ({made}); "
          f"manifest: {Path(out) / 'manifest.json'}", flush=True)


# ---------------------------------------------------------------- predict classifier

def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN", help="a run directory made by 'train classifier'")
    parser.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                        help="which weights (default: best by validation loss)")
    parser.add_argument("--tta", action="store_true", help="average over the 8 rotations/flips (D4) of each image")
    parser.add_argument("--images", required=True, metavar="DATASET", help="a galaxies dataset folder")
    parser.add_argument("--split", default="test", help="which split of DATASET (default: test)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder of the prediction set")
    parser.add_argument("--batch", type=int, default=256, metavar="B", help="images per batch (default 256)")
    parser.add_argument("--overwrite", action="store_true", help="replace a different set already in DIR")


def run_predict(args: argparse.Namespace) -> int:
    from cosmotrain import dist, logs, sample
    from cosmotrain.data import shards

    ctx = dist.init_mpi()
    logs.setup(args.verbose)
    _check_counts(1, args.batch, 0)
    images = shards.ShardSet(args.images, args.split, kind="galaxies")
    if images.n == 0:
        raise UserError(f"{args.images} has no images in split '{args.split}'; pick another --split")
    class_names = list(images.attrs.get("class_names", ["round", "edge-on", "spiral"]))
    classify, sha = _load_classifier(args.run, args.checkpoint, images.sample_shape("images"), class_names,
                                     args.tta)
    spec = sample.Spec(
        "classifier-predictions", images.n, args.batch,
        {"ids": ("int64", ()), "probabilities": ("float32", (len(class_names),)), "predicted": ("int8", ())},
        identity={"model_sha256": sha, "tta": args.tta,
                  "images": {"manifest_sha256": shards.sha256(images.root / shards.MANIFEST), "split": args.split}},
        attrs={"probabilities": {"class_names": json.dumps(class_names)},
               "predicted": {"class_names": json.dumps(class_names)}})
    extra = {"model": {"run": str(Path(args.run).resolve()), "checkpoint": args.checkpoint, "sha256": sha},
             "images": {"path": str(images.root.resolve()), "split": args.split}, "class_names": class_names,
             "config": {"predict": {"batch": args.batch}, "run": _run_config(args.run)}}
    manifest = sample.produce(args.out, spec, _predictions(images, classify), overwrite=args.overwrite,
                              extra=extra, desc="predicting")
    if ctx.is_root:
        _report(args.out, manifest, "predictions")
    return 0


def _predictions(images, classify):
    """``compute`` for the engine: ids, probabilities and predicted class of images start:stop."""
    import numpy as np

    from cosmotrain import sample

    def compute(start: int, stop: int) -> dict:
        batch = images.read(start, stop, ("images", "ids"))
        probabilities = sample.require_finite(np.asarray(classify(batch["images"]), np.float32), start)
        return {"ids": batch["ids"], "probabilities": probabilities,
                "predicted": probabilities.argmax(axis=1).astype(np.int8)}
    return compute


def _load_classifier(run: str, which: str, image_shape: tuple, class_names: list, tta: bool):
    """(images uint8 [B,H,W,3] → probabilities float32 [B,C], checkpoint sha256) of a classifier run."""
    from cosmotrain import dist, evaluate
    from cosmotrain.config import ConfigError

    run_dir = Path(run)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run} is not a classifier run (no config.yaml); pass --run RUN made by "
                        f"'cosmotrain train classifier'")
    dist.configure_tensorflow()
    try:
        _, model, path, _ = evaluate.load_model(run_dir, which, image_shape, class_names)
    except ConfigError as err:
        raise UserError(f"{run} is not a classifier run ({err}); pass --run RUN made by "
                        f"'cosmotrain train classifier'") from None
    return (lambda batch: evaluate.predict(model, batch, tta, batch=len(batch))), checkpoint_sha256(path)


def checkpoint_sha256(prefix: str) -> str:
    """sha256 over a TensorFlow checkpoint's index and data files, in name order.

    The same digest as ``train.gan.checkpoint_sha256`` (not imported: predicting with the
    classifier must not need the GAN trainer).
    """
    import hashlib

    digest = hashlib.sha256()
    path = Path(prefix)
    for file in sorted(path.parent.glob(path.name + ".*")):
        digest.update(file.name.split(".", 1)[1].encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- validate samples

def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("samples", metavar="DIR", help="a sample set made by 'sample gan'")
    parser.add_argument("--reference", required=True, metavar="DATASET", help="a CMB dataset made by 'data cmb'")
    parser.add_argument("--split", default="test", help="split of the reference (default: test)")
    parser.add_argument("--out", metavar="OUT", help="where validation.json/.png go (default: DIR/validation)")
    parser.add_argument("--batch", type=int, default=256, metavar="B", help="patches read at a time (default 256)")


def run_validate(args: argparse.Namespace) -> int:
    from cosmotrain import dist, logs, validate

    ctx = dist.init_mpi()
    logs.setup(args.verbose)
    _check_counts(1, args.batch, 0)
    out = Path(args.out) if args.out else Path(args.samples) / "validation"
    report = validate.validate_samples(args.samples, args.reference, args.split, out, args.batch)
    if ctx.is_root:
        print(json.dumps(report["summary"]), flush=True)
    return 0


COMMANDS = [
    Command("sample", "gan", "generate N patches with a trained GAN across MPI ranks", add_gan_arguments, run_gan,
            description=SAMPLE_HELP),
    Command("predict", "classifier", "classify a dataset's images across MPI ranks", add_predict_arguments,
            run_predict, description=PREDICT_HELP),
    Command("validate", "samples", "compare a sample set's statistics with a reference dataset",
            add_validate_arguments, run_validate, description=VALIDATE_HELP),
]
