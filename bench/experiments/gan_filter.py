"""A calibration filter applied to the mirrored patch, fitted on a trained GAN run: what the referee then says.

    python bench/experiments/gan_filter.py RUN DATA [CHECKPOINT] [FLOOR] [SPLIT]

RUN is a GAN run (e.g. the run folder `cosmotrain bench gan-quality` prints), DATA its CMB
dataset, CHECKPOINT ``best`` (default) or ``latest``; FLOOR the fraction of the strongest
ring's real power below which a ring keeps gain 1 (default 1e-6, as ``science.calibration``;
1e-14 fits every ring). The shipped filter (``science.calibration.apply``) multiplies the
periodic FFT of the patch, whose edge jump it scales too; this one filters the patch beside
its mirror images (a tile without a jump) and crops it back. Gains are fitted (12 passes)
on 4096 patches of G to the training split's mean Hann ring powers, then three latent sets
of 1024 are put to the referee against SPLIT (default ``val``). Prints the fit's residual,
the gains, each test's p-value, the band-power ratios and the rings' z. Figures of
2026-12-05 in docs/gan.md. A minute or two per run.
"""
import sys

import numpy as np

from cosmotrain.bench.gan_quality import without_calibration
from cosmotrain.data import referee_side
from cosmotrain.data.reader import ShardSet
from cosmotrain.inference import load_generator
from cosmotrain.science import rings


def mirrored_apply(x: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Ring k's scales × gains[k], on each patch's 2×2 mirrored tile, cropped back: float32 [N, s, s]."""
    size = x.shape[-1]
    ring = np.minimum(rings.mode_rings(size, tile=2), len(gains))
    tile = np.concatenate([x, x[:, ::-1]], axis=1)
    tile = np.concatenate([tile, tile[:, :, ::-1]], axis=2)
    out = np.fft.ifft2(np.fft.fft2(tile) * np.append(gains, 1.0)[ring]).real
    return out[:, :size, :size].astype(np.float32)


def main(run, data, which="best", floor="1e-6", split="val"):
    generator = without_calibration(load_generator(run, which))
    train = ShardSet(data, "train", kind="cmb")
    real = train.read(0, train.n, ("patches",))["patches"].astype(np.float64)
    size = real.shape[-1]
    top = rings.top_wavenumber(size, train.attrs["reso_arcmin"], train.attrs.get("lmax"))
    matrix = rings.ring_matrix(size, top)
    target = rings.patch_ring_powers(generator.transform.to_net(real), matrix).mean(axis=0)
    made = generator.network(np.random.default_rng([7, 5]).standard_normal((4096, generator.latent_dim))
                             .astype(np.float32))
    gains, fitted = np.ones(len(target)), target > float(floor) * target.max()
    for _ in range(12):
        measured = rings.patch_ring_powers(mirrored_apply(made, gains), matrix).mean(axis=0)
        gains = np.where(fitted, np.clip(gains * np.sqrt(target / measured), 0.25, 4.0), 1.0)
    measured = rings.patch_ring_powers(mirrored_apply(made, gains), matrix).mean(axis=0)
    print("fit residual", np.round(measured / target, 3).tolist())
    print("gains", np.round(gains, 3).tolist())
    reference = referee_side.build(data, split)
    for seed in (99, 100, 101):
        z = np.random.default_rng(seed).standard_normal((1024, generator.latent_dim)).astype(np.float32)
        for name, g in (("G alone", np.ones_like(gains)), ("filtered", gains)):
            out = generator.transform.to_uK(mirrored_apply(generator.network(z), g).astype(np.float64))
            verdict = referee_side.judge(reference, out.astype(np.float32))
            print(seed, name, {k: float(f"{t['p_value']:.1e}") for k, t in verdict["tests"].items()})
            print("  band-power ratio", np.round(verdict["tests"]["band_powers"]["ratio"], 3).tolist())
            print("  rings z", np.round(verdict["tests"]["rings"]["z"], 1).tolist())


if __name__ == "__main__":
    main(*sys.argv[1:])
