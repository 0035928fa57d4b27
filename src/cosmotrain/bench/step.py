"""P2: the trainer's step time / a bare ``tf.function`` training loop, same model and batches, 1 rank.

The trainer's step is the whole per-step path of ``train classifier``: the epoch loop with
its pre-emption/NaN agreement, dropout re-keying, per-rank sums, progress bar and first-step
broadcast. The bare loop is forward, loss, gradient, Adam update, nothing else. Both run on
the same pre-made in-memory batches; rounds alternate between the two so that drifting
machine load hits both, and the ratio is the median over rounds. Target <= 1.03.

Also home of the helpers the classifier benchmarks share (``input``, ``scaling``).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from cosmotrain import config, dist, logs

TARGET = 1.03
TINY = Path(__file__).resolve().parents[3] / "configs" / "classifier_tiny.yaml"
IMAGE = 64


# ---------------------------------------------------------------- shared helpers

def bench_config(batch: int, overrides: tuple = ()):
    """The tiny classifier config (the repo's, when present) with a fixed per-rank batch."""
    from cosmotrain.train.classifier import ClassifierConfig

    path = TINY if TINY.is_file() else None
    return config.load(ClassifierConfig, path, [f"train.batch_size={batch}", *overrides])


def write_bench_dataset(root: Path, n_train: int, size: int = IMAGE, seed: int = 0) -> Path:
    """A galaxies dataset of random pixels (the bytes matter here, not the content)."""
    from cosmotrain.data import shards

    rng = np.random.default_rng(seed)

    def split(n):
        labels = (np.arange(n) % 3).astype(np.int8)
        return {"images": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), "labels": labels,
                "vote_fractions": np.eye(3, dtype=np.float32)[labels], "ids": np.arange(n, dtype=np.int64)}

    shards.write_dataset(root, "galaxies", {"train": split(n_train), "val": split(64)},
                         {"class_names": ["round", "edge-on", "spiral"], "threshold": 1.0, "source": "bench"},
                         config={"bench": True}, seed=seed, samples_per_shard=2048)
    return root


def memory_batches(n: int, batch: int, size: int = IMAGE, seed: int = 1) -> list:
    """``n`` (images uint8 [B,S,S,3], labels int8 [B]) pairs as TF tensors, made once."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    return [(tf.constant(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)),
             tf.constant((np.arange(batch) % 3).astype(np.int8))) for _ in range(n)]


def prepared_run(cfg, data: Path, out: Path):
    """A classifier ``Run`` of ``cfg`` on ``data``, ready to train (the real trainer)."""
    import dataclasses

    from cosmotrain.train import classifier

    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=str(data)))
    return classifier.prepare(cfg, out, overwrite=True)


def time_trainer_steps(run, batches: list, epoch: int = 0) -> float:
    """Seconds per step of the trainer's epoch loop over ``batches`` (all ranks in step)."""
    from cosmotrain.train.common import RequeueSignal

    run.state.batch = 0
    dist.barrier()
    start = time.perf_counter()
    with RequeueSignal() as signal:
        run.train_epoch(epoch, signal, batches)
    dist.barrier()
    return (time.perf_counter() - start) / run.state.batch


def quiet_logs() -> None:
    """Benchmarks print one JSON line: keep INFO logs and bars out of the way."""
    import logging

    logs.setup()
    logs.get().setLevel(logging.WARNING)


# ---------------------------------------------------------------- P2

def bare_loop(model, batches: list):
    """A minimal training function: forward, loss, gradients, Adam. Returns a runner."""
    import tensorflow as tf

    optimizer = tf.keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)

    @tf.function(autograph=False)
    def step(images, labels):
        with tf.GradientTape() as tape:
            probs = model(images, training=True)
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(tf.cast(labels, tf.int32), probs))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    def run() -> float:
        start = time.perf_counter()
        for images, labels in batches:
            loss = step(images, labels)
        float(loss)
        return (time.perf_counter() - start) / len(batches)

    return run


def run(args) -> dict:
    dist.init_horovod()
    quiet_logs()
    from cosmotrain.models.classifier import build_classifier

    steps, rounds = (20, 3) if args.quick else (60, 7)
    cfg = bench_config(batch=32)
    batches = memory_batches(steps, cfg.train.batch_size)
    with tempfile.TemporaryDirectory(prefix="cosmotrain-bench-") as tmp:
        data = write_bench_dataset(Path(tmp) / "data", n_train=cfg.train.batch_size * steps)
        trainer_run = prepared_run(cfg, data, Path(tmp) / "run")
        bare = bare_loop(build_classifier(cfg.model, (IMAGE, IMAGE, 3)), batches)
        bare(), time_trainer_steps(trainer_run, batches)  # trace both, first-step broadcast
        pairs = [(time_trainer_steps(trainer_run, batches, epoch=r + 1), bare()) for r in range(rounds)]
    ratios = [t / b for t, b in pairs]
    return {"ratio": round(statistics.median(ratios), 4), "target": TARGET,
            "trainer_step_ms": round(1e3 * statistics.median(t for t, _ in pairs), 3),
            "bare_step_ms": round(1e3 * statistics.median(b for _, b in pairs), 3),
            "ratios_per_round": [round(r, 4) for r in ratios], "steps_per_round": steps,
            "batch": cfg.train.batch_size, "image": IMAGE, "threads": dist.context().threads,
            "model": config.to_dict(cfg.model)}
