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
        attrs={"patches": {"units": "uK_CMB", **_pixel_size(generator)}})
    extra = {"seed": seed, "model": {"run": str(Path(run).resolve()), "checkpoint": checkpoint,
                                     "sha256": generator.sha256},
             "config": {"sampling": {"n": n, "batch": batch, "seed": seed}, "run": RunDir(run).saved_config()}}
    compute = sampleset.gan_compute(generator, generator.latent_dim, seed)
    manifest = sampleset.produce(out, spec, compute, overwrite=overwrite, extra=extra, desc="sampling")
    sampleset.report(out, manifest, "patches")
    return manifest


def _pixel_size(generator) -> dict:
    """``{"reso_arcmin": ...}`` of the training patches (what `validate samples` checks), if the run knows it."""
    reso = generator.info.get("dataset", {}).get("reso_arcmin")
    return {} if reso is None else {"reso_arcmin": float(reso)}
