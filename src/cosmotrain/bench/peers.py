"""P9 `bench peers`: cosmotrain on 2 ranks ÷ the plain Keras script a user would write instead.

Side by side on this machine, the same global batch (64) and the same networks:

- classifier: ``mpirun -np 2 cosmotrain train classifier`` (2 ranks × 1 thread) against a
  tutorial-style script in one process using both cores: a ``tf.keras.Sequential`` CNN of the
  same layers, ``model.fit`` on a ``tf.data`` pipeline that reads the same HDF5 shards sample
  by sample through ``from_generator``, ``shuffle``, ``batch``, ``prefetch``;
- GAN: ``mpirun -np 2 cosmotrain train gan`` against a keras-io-style DCGAN in one process
  (a ``keras.Model`` whose ``train_step`` trains D then G, run by ``fit``; the same G and D).

Both sides do the same arithmetic: the classifier without augmentation, the GAN with the
seed's plain adversarial losses (no spectrum term, no moving average of G, no augmentation:
the keras-io loop has none of them). Samples/s of training (validation and the first epoch,
which traces the graphs, are left out); the sides alternate and each keeps its best launch.
``ratio`` = the smaller of the two cosmotrain ÷ Keras ratios; target ≥ 1.0. Beside them,
``cosmotrain_one_rank_samples_per_s``: cosmotrain as one process with the whole batch and
both cores, laid out like the Keras script, which separates the trainer's own cost from
what splitting two cores into two MPI ranks costs.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TARGET = 1.0
BATCH = 64           # global: 2 ranks x 32 for cosmotrain, one batch of 64 for Keras
LAUNCH = ["--bind-to", "core", "--map-by", "core", "--mca", "mpi_yield_when_idle", "1"]
PEER = "import sys, json; from cosmotrain.bench import peers; print(json.dumps(getattr(peers, sys.argv[1])(*sys.argv[2:])))"


# ---------------------------------------------------------------- the plain Keras scripts

def keras_classifier(data: str, epochs: str) -> dict:
    """A tutorial's CNN training: Sequential model, tf.data over the HDF5 shards, ``fit``. Samples/s."""
    import tensorflow as tf

    train = sorted(Path(data).glob("train-*.h5"))
    shape, n = _h5_info(train, "images")
    dataset = _h5_dataset(train, ("images", "labels"), (tf.uint8, tf.int8), n).map(
        lambda x, y: (x, tf.cast(y, tf.int32)))
    model = tf.keras.Sequential([tf.keras.Input(shape, dtype=tf.uint8), tf.keras.layers.Rescaling(1 / 255)]
                                + [layer for width in (16, 32, 64) for layer in (
                                    tf.keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
                                    tf.keras.layers.MaxPooling2D(2))]
                                + [tf.keras.layers.Flatten(), tf.keras.layers.Dense(64, activation="relu"),
                                   tf.keras.layers.Dropout(0.2), tf.keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    timer = _keras_classes()[1]()
    model.fit(dataset, epochs=int(epochs), callbacks=[timer], verbose=0)
    return {"samples_per_s": timer.samples_per_s(BATCH), "params": model.count_params()}


def keras_gan(data: str, steps: str, model_json: str) -> dict:
    """A keras-io DCGAN: ``train_step`` trains D on real + fake, then G; run by ``fit``. Samples/s."""
    import tensorflow as tf

    from cosmotrain.models.dcgan import ModelConfig, build_discriminator, build_generator, input_dim

    cfg = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(model_json).items()})
    train = sorted(Path(data).glob("train-*.h5"))
    _, n = _h5_info(train, "patches")
    scale = 5 * 100.0  # μK → network units, as a tutorial rescales its inputs
    dataset = _h5_dataset(train, ("patches",), (tf.float32,), n).map(lambda x: x / scale)
    keras_io_gan, epoch_timer = _keras_classes()
    gan = keras_io_gan(build_discriminator(cfg), build_generator(cfg), input_dim(cfg))
    gan.compile(tf.keras.optimizers.Adam(2e-4, beta_1=0.5), tf.keras.optimizers.Adam(2e-4, beta_1=0.5))
    timer = epoch_timer()
    per_epoch = n // BATCH
    gan.fit(dataset.repeat(), epochs=max(2, int(steps) // per_epoch), steps_per_epoch=per_epoch, callbacks=[timer],
            verbose=0)
    return {"samples_per_s": timer.samples_per_s(BATCH), "params": gan.generator.count_params()
            + gan.discriminator.count_params()}


def _h5_info(files: list, field: str) -> tuple[tuple, int]:
    import h5py

    with h5py.File(files[0]) as f:
        shape = f[field].shape[1:]
    return shape, sum(h5py.File(p)[field].shape[0] for p in files)


def _h5_dataset(files: list, fields: tuple, dtypes: tuple, n: int):
    """Samples read one by one from the HDF5 files, shuffled, batched and prefetched (tf.data)."""
    import h5py
    import tensorflow as tf

    def samples():
        for path in files:
            with h5py.File(path) as f:
                arrays = [f[name] for name in fields]
                for i in range(arrays[0].shape[0]):
                    row = tuple(a[i] for a in arrays)
                    yield row if len(row) > 1 else row[0]

    with h5py.File(files[0]) as f:
        specs = tuple(tf.TensorSpec(f[name].shape[1:], dtype) for name, dtype in zip(fields, dtypes))
    dataset = tf.data.Dataset.from_generator(samples, output_signature=specs if len(specs) > 1 else specs[0])
    return dataset.shuffle(min(n, 2048)).batch(BATCH, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _keras_classes():
    """The keras-io GAN model and the epoch timer (TensorFlow loads only when they are needed)."""
    import tensorflow as tf

    class KerasIoGan(tf.keras.Model):
        """keras-io's "DCGAN to generate face images", as a user copies it, with ``training=True``.

        keras-io calls the networks without it, so BatchNorm runs in inference mode (no batch
        statistics, no moving averages): less work, and not the DCGAN being trained here.
        """

        def __init__(self, discriminator, generator, latent_dim):
            super().__init__()
            self.discriminator, self.generator, self.latent_dim = discriminator, generator, latent_dim
            self.loss_fn = tf.keras.losses.BinaryCrossentropy(from_logits=True)

        def compile(self, d_optimizer, g_optimizer):
            super().compile()
            self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

        def train_step(self, real):
            batch = tf.shape(real)[0]
            z = tf.random.normal((batch, self.latent_dim))
            combined = tf.concat([self.generator(z, training=True), real], axis=0)
            labels = tf.concat([tf.ones((batch, 1)), tf.zeros((batch, 1))], axis=0)
            labels += 0.05 * tf.random.uniform(tf.shape(labels))
            with tf.GradientTape() as tape:
                d_loss = self.loss_fn(labels, self.discriminator(combined, training=True))
            grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
            self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
            z = tf.random.normal((batch, self.latent_dim))
            with tf.GradientTape() as tape:
                fake = self.generator(z, training=True)
                g_loss = self.loss_fn(tf.zeros((batch, 1)), self.discriminator(fake, training=True))
            grads = tape.gradient(g_loss, self.generator.trainable_weights)
            self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
            return {"d_loss": d_loss, "g_loss": g_loss}

    class EpochTimer(tf.keras.callbacks.Callback):
        """Wall seconds and batches of each epoch's training part (validation excluded)."""

        def __init__(self):
            super().__init__()
            self.epochs: list[tuple[float, int]] = []

        def on_epoch_begin(self, epoch, logs=None):
            import time

            self.start, self.batches = time.perf_counter(), 0

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1

        def on_epoch_end(self, epoch, logs=None):
            import time

            self.epochs.append((time.perf_counter() - self.start, self.batches))

        def samples_per_s(self, batch: int) -> float:
            """The median epoch's samples/s, the first (tracing) epoch left out."""
            rates = [b * batch / s for s, b in self.epochs[1:]] or [b * batch / s for s, b in self.epochs]
            return float(np.median(rates))

    return KerasIoGan, EpochTimer


# ---------------------------------------------------------------- cosmotrain's side and the benchmark

def cosmotrain_run(kind: str, data: Path, out: Path, args: list[str], ranks: int = 2) -> float:
    """``mpirun -np 2 cosmotrain train KIND``; its training samples/s (the first epoch or log window left out).

    ``ranks=1``: one plain process with the whole global batch and both cores, laid out like the Keras side.
    """
    launcher = ["mpirun", "-np", "2", *LAUNCH] if ranks == 2 else []
    batch = [] if ranks == 2 else ["--set", f"train.batch_size={BATCH}"]
    cmd = [*launcher, sys.executable, "-m", "cosmotrain.cli", "train", kind, "--data", str(data),
           "--out", str(out), "--overwrite", *args, *batch]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"cosmotrain train {kind} failed:\n{done.stderr[-3000:]}")
    with (out / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    if kind == "classifier":
        rates = [float(r["samples_per_s"]) for r in rows]
    else:
        rates = [float(r["steps_per_s"]) * BATCH for r in rows]
    return float(np.median(rates[1:] or rates))


def keras_run(name: str, *args: str) -> dict:
    """One plain-Keras script in a fresh process with both cores."""
    done = subprocess.run([sys.executable, "-c", PEER, name, *args], capture_output=True, text=True, env=_env(),
                          timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"the Keras peer {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _env() -> dict:
    return {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def run(args) -> dict:
    from cosmotrain import config
    from cosmotrain.train.gan_config import GanConfig

    quick = args.quick
    n_gal, epochs, n_cmb, steps, launches = (640, 3, 640, 30, 1) if quick else (4800, 5, 4096, 300, 2)
    gan_cfg = config.load(GanConfig, config.shipped("gan_tiny.yaml"))
    model_json = json.dumps(config.to_dict(gan_cfg.model))
    clf_args = ["--config", str(config.shipped("classifier_tiny.yaml")), "--set", f"train.epochs={epochs}",
                "--set", "train.augment=false"]
    gan_args = ["--config", str(config.shipped("gan_tiny.yaml")), "--set", f"train.steps={steps}",
                "--set", "train.spectrum_weight=0", "--set", "train.variance_weight=0", "--set",
                "train.scatter_weight=0", "--set", "train.ema=0", "--set", "train.augment=false", "--set",
                "monitor.every=0", "--set", "monitor.calibration_patches=0", "--set", f"train.log_every={max(5, steps // 10)}",
                "--set", f"train.checkpoint_every={steps}", "--set", "monitor.reference=128", "--set",
                "monitor.generated=128"]
    sides = {kind: {"ours": [], "one": [], "theirs": []} for kind in ("classifier", "gan")}
    with tempfile.TemporaryDirectory(prefix="cosmotrain-bench-") as tmp:
        gal, cmb = write_galaxies(Path(tmp) / "galaxies", n_gal), write_cmb(Path(tmp) / "cmb", n_cmb)
        for _ in range(launches):
            for kind, data, args, peer in (("classifier", gal, clf_args, ("keras_classifier", str(gal), str(epochs))),
                                           ("gan", cmb, gan_args, ("keras_gan", str(cmb), str(steps), model_json))):
                sides[kind]["ours"].append(cosmotrain_run(kind, data, Path(tmp) / kind, args))
                sides[kind]["theirs"].append(keras_run(*peer))
                sides[kind]["one"].append(cosmotrain_run(kind, data, Path(tmp) / kind, args, ranks=1))
    result = {}
    for kind, side in sides.items():
        ours, one, theirs = max(side["ours"]), max(side["one"]), max(t["samples_per_s"] for t in side["theirs"])
        result[kind] = {"ratio": round(ours / theirs, 4), "cosmotrain_samples_per_s": round(ours, 1),
                        "keras_samples_per_s": round(theirs, 1), "keras_params": side["theirs"][0]["params"],
                        "cosmotrain_one_rank_samples_per_s": round(one, 1), "one_rank_ratio": round(one / theirs, 4),
                        "launches": launches}
    return {"ratio": min(r["ratio"] for r in result.values()), "target": TARGET, **result, "global_batch": BATCH,
            "cosmotrain": "mpirun -np 2 " + " ".join(LAUNCH) + " (1 thread per rank)",
            "keras": "one process, TensorFlow's default threads (both cores)"}


def write_galaxies(root: Path, n: int) -> Path:
    """A galaxies dataset of random pixels, 80 % train (the bytes matter here, not the content)."""
    from cosmotrain.bench.step import write_bench_dataset

    return write_bench_dataset(root, n_train=n)


def write_cmb(root: Path, n: int, size: int = 64) -> Path:
    """A CMB dataset of Gaussian patches (100 μK rms), with the attributes training checks."""
    from cosmotrain.data import shards

    rng = np.random.default_rng(0)

    def split(count: int, sky: int) -> dict:
        return {"patches": rng.normal(0, 100, (count, size, size)).astype(np.float32),
                "centers": np.zeros((count, 2), np.float64), "sky": np.full(count, sky, np.int32)}

    attrs = {"reso_arcmin": 4.0, "nside": 1024, "lmax": 2047, "fwhm_arcmin": 10.0, "cl_source": "bench", "seed": 0}
    shards.write_dataset(root, "cmb", {"train": split(n, 0), "val": split(256, 1)}, attrs,
                         config={"bench": True}, seed=0, samples_per_shard=2048)
    return root
