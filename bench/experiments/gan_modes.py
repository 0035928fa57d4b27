"""Is the band-power and scatter miss G's own, or how it is read? The referee's z per bin, five readings of G.

    python bench/experiments/gan_modes.py RUN DATASET [SPLIT]

Puts 1024 patches to the referee against SPLIT (default ``test``) of DATASET and prints
the failed tests' p-values and, per band-power bin, z of the mean band power and of the
patch-to-patch scatter, for

* G's weight average in inference mode (what ``sample gan`` draws);
* the same weights with BatchNorm in training mode, batches of 32 (what the spectrum term sees);
* G's own weights (not the average), inference and training mode;
* the average in inference mode after its BatchNorm statistics were recomputed over 400 batches;
* 1024 training patches (the spectrum term's target: how far the training skies sit from SPLIT's).

If a miss shows in every reading of G but not in the training patches, it is what G
makes, not how its BatchNorm or its weight average is read. Figures in docs/gan.md
("Seeds, noise inputs, and where the miss is made").
"""
import sys

import numpy as np
import tensorflow as tf

from cosmotrain import config
from cosmotrain.data import referee_side
from cosmotrain.data.reader import ShardSet
from cosmotrain.inference import _checkpoint, load_generator
from cosmotrain.models.dcgan import ModelConfig, build_generator
from cosmotrain.models.latents import latents

N, BATCH = 1024, 32


def show(name: str, reference, patches_uK: np.ndarray) -> None:
    tests = referee_side.judge(reference, patches_uK.astype(np.float32))["tests"]
    print(f"{name}: " + " ".join(f"{k} {t['p_value']:.0e}" for k, t in tests.items() if not t["pass"]))
    for test in ("band_powers", "scatter"):
        ratio, sigma = np.array(tests[test]["ratio"]), np.array(tests[test]["ratio_sigma"])
        print(f"  {test:11s} z", " ".join(f"{z:+5.1f}" for z in (ratio - 1) / sigma))


def readings(run: str):
    """G's weight average (``TrainedGenerator``) and (name, latents → patches in network units) for it and for
    G's own weights, each in inference and in training mode."""
    average = load_generator(run, "latest")
    path, state = _checkpoint(run, "latest", "cmb-dcgan", "cosmotrain train gan")
    own = build_generator(config.from_dict(ModelConfig, state.signature["model"]))
    tf.train.Checkpoint(generator=own).restore(path).expect_partial()
    ways = [(f"{name}, {mode}", lambda z, m=model, t=(mode == "training mode"): m(z, training=t).numpy())
            for name, model in (("average", average.model), ("own weights", own))
            for mode in ("inference", "training mode")]
    return average, ways


def recomputed(model, latent_dim: int, batches: int = 400):
    """``model`` in inference mode after ``batches`` training-mode calls on other latents have set its BatchNorm
    statistics (momentum 0.99) to those of its own weights: the average's statistics are an average of G's."""
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = 0.99
    z = latents(3000, 0, BATCH * batches, latent_dim)
    for i in range(0, len(z), BATCH):
        model(z[i:i + BATCH], training=True)
    return lambda z: model(z, training=False).numpy()


def main(run: str, data: str, split: str = "test") -> None:
    reference = referee_side.build(data, split)
    average, ways = readings(run)
    z = latents(2000, 0, N, average.latent_dim)

    def draw(forward):
        net = np.concatenate([forward(z[i:i + BATCH]) for i in range(0, N, BATCH)])
        return average.transform.to_uK(net.astype(np.float64))

    for name, forward in ways:
        show(name, reference, draw(forward))
    show("average, statistics recomputed", reference, draw(recomputed(average.model, average.latent_dim)))
    train = ShardSet(data, "train", kind="cmb")
    pick = np.random.default_rng(0).choice(train.n, N, replace=False)  # shuffled: the diversity test pairs
    show("training patches", reference, train.read(0, train.n, ("patches",))["patches"][pick].astype(np.float64))


if __name__ == "__main__":
    main(*sys.argv[1:])
