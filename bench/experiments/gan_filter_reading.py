"""A run's final G through calibration filters fitted after training: none, Hann, Laplacian reading.

    python bench/experiments/gan_filter_reading.py DATASET RUN [SETS] [best|latest] [FIT_PATCHES]

Fits ``science.calibration`` gains on FIT_PATCHES (default 4096) patches of the checkpoint (latents of its own,
not the verdict's) to the training skies' mean ring powers, once through the Hann window
(``monitor.calibration_reading: hann``) and once from ring 2 on through the rings test's
reading (``laplacian``: the patches' Laplacian under the referee's Tukey window). Then
judges SETS (default 10) latent sets of 1024, the benchmark's (``LATENT_SEED``), against
the test skies with no filter and with each, and prints the gains, the share of sets
passing each test with its median p, the rings test's mean z per ring (both readings)
and each set's worst ring; last, through the Laplacian filter with half of each set's
patches negated (what ``model.sign_flip`` builds into G). Figures in docs/gan.md
("The filter through the rings test's window").
"""
import copy
import sys

import numpy as np

from cosmotrain.bench.gan_quality import LATENT_SEED, SET_SIZE
from cosmotrain.data import referee_side
from cosmotrain.data.reader import ShardSet
from cosmotrain.inference import load_generator
from cosmotrain.science import calibration, rings
from cosmotrain.science.referee import TESTS

FIT_PATCHES = 4096


def targets(data: str, generator) -> tuple[np.ndarray, np.ndarray]:
    """The training skies' mean Hann and prewhitened ring powers, in the generator's network units."""
    train = ShardSet(data, "train", kind="cmb")
    real = generator.transform.to_net(train.read(0, train.n, ("patches",))["patches"].astype(np.float64))
    top = rings.top_wavenumber(real.shape[-1], float(train.attrs["reso_arcmin"]), train.attrs.get("lmax"))
    matrix = rings.ring_matrix(real.shape[-1], top)
    return (rings.patch_ring_powers(real, matrix).mean(axis=0),
            rings.patch_ring_powers(real, matrix, prewhiten=True).mean(axis=0))


def judge(reference, generator, gains, sets: int, negate_half: bool = False) -> None:
    filtered = copy.copy(generator)
    filtered.gains = gains
    rng = np.random.default_rng(LATENT_SEED)
    half = np.random.default_rng(5).random(SET_SIZE) < 0.5
    verdicts = []
    for _ in range(sets):
        x = filtered(rng.standard_normal((SET_SIZE, generator.latent_dim)).astype(np.float32))
        if negate_half:  # about the training mean: T → −T in network units
            x[half] = 2.0 * generator.transform.offset_uK - x[half]
        verdicts.append(referee_side.judge(reference, x))
    print(f"  all tests {np.mean([v['pass'] for v in verdicts]):.0%};", "  ".join(
        f"{t} {np.mean([v['tests'][t]['pass'] for v in verdicts]):.0%} "
        f"(p {np.median([v['tests'][t]['p_value'] for v in verdicts]):.0e})" for t in TESTS))
    for reading in ("windowed", "unwindowed"):
        z = np.mean([v["tests"]["rings"][f"z_{reading}"] for v in verdicts], axis=0)
        print(f"  rings z, {reading:10s}", " ".join(f"{x:+.1f}" for x in z))
    print("  worst ring per set:", " ".join(f"{v['tests']['rings']['worst_ring_k']}"
                                            f"{v['tests']['rings']['worst_reading'][0]}" for v in verdicts))


def main(data: str, run: str, sets: str = "10", which: str = "latest", fit_patches: str = str(FIT_PATCHES)) -> None:
    generator = load_generator(run, which)
    hann, whitened = targets(data, generator)
    z = np.random.default_rng(7).standard_normal((int(fit_patches), generator.latent_dim)).astype(np.float32)
    made = generator.network(z)
    fits = {"none": None, "hann": calibration.fit(made, hann),
            "laplacian": calibration.fit(made, hann, whitened=whitened)}
    reference = referee_side.build(data, "test")
    print(f"{run}, step {generator.info['step']}, filters fitted on {fit_patches} patches, "
          f"{sets} sets of {SET_SIZE} against the test skies")
    for name, gains in fits.items():
        print(f"filter {name}" + ("" if gains is None else ": gains " + " ".join(f"{g:.3f}" for g in gains)))
        judge(reference, generator, gains, int(sets))
    print("filter laplacian, half of each set negated")
    judge(reference, generator, fits["laplacian"], int(sets), negate_half=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
