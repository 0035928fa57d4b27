"""`cosmotrain sample gan`: a large, resumable set of patches from a trained GAN, across MPI ranks.

Sample i comes from the latent vector keyed by (seed, i) (``models.latents``), so
the set is the same whatever the rank count. The crash-safe engine (``sampleset``) writes
the per-rank parts, the virtual ``samples.h5`` and the manifest, and a rerun finishes a set
a kill left incomplete.
"""
from __future__ import annotations

from pathlib import Path

from cosmotrain import dist, sampleset
from cosmotrain.inference import load_generator
from cosmotrain.models.latents import LATENTS
from cosmotrain.rundir import RunDir


def sample_gan(run: str, checkpoint: str, n: int, out: str, batch: int = 64, seed: int = 0,
               overwrite: bool = False) -> dict:
    """Make (or finish) the set of ``n`` patches of ``run``'s ``checkpoint`` in ``out``; the manifest on every rank."""
    sampleset.check_counts(n, batch, seed)
    dist.configure_tensorflow()  # thread pools and GPU pinning, before TensorFlow starts
    generator = load_generator(run, checkpoint)
    spec = sampleset.Spec(
        "gan-samples", n, batch, {"patches": ("float32", generator.image_size)},
        identity={"model_sha256": generator.sha256, "seed": seed, "latent_dim": generator.latent_dim,
                  "latents": LATENTS},
        attrs={"patches": _patch_attrs(generator.info["dataset"])})
    extra = {"seed": seed, "model": {"run": str(Path(run).resolve()), "checkpoint": str(Path(generator.checkpoint)
                                                                                         .resolve()),
                                     "requested": checkpoint, "sha256": generator.sha256,
                                     "step": generator.info["step"]},
             "dataset": generator.info["dataset"],
             "config": {"sampling": {"n": n, "batch": batch, "seed": seed}, "run": RunDir(run).saved_config()}}
    compute = sampleset.gan_compute(generator, generator.latent_dim, seed)
    manifest = sampleset.produce(out, spec, compute, overwrite=overwrite, extra=extra, desc="sampling")
    sampleset.report(out, manifest, "patches")
    return manifest


def _patch_attrs(dataset: dict) -> dict:
    """The ``patches`` attributes: units, and the pixel size and beam of the training patches (when the run knows them)."""
    attrs = {"units": "uK_CMB"}
    for key in ("reso_arcmin", "fwhm_arcmin", "nside", "lmax"):
        if key in dataset:
            attrs[key] = dataset[key]
    return attrs
