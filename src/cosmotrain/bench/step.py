"""P2: the trainer's step time / a bare ``tf.function`` training loop, same model and batches, 1 rank.

The trainer's step is the whole per-step path of ``train classifier``: the epoch loop with
its pre-emption/NaN agreement, dropout re-keying, per-rank sums, progress bar and first-step
broadcast. The bare loop is forward, loss, gradient, Adam update, nothing else. Both do the
same arithmetic (the trainer without its D4 augmentation; ``ratio_with_augment`` adds it)
on the same pre-made in-memory batches; rounds alternate so that drifting machine load
hits all, and the ratio compares each loop's best round (``ratio_figures``). Target <= 1.03.

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
IMAGE = 64


# ---------------------------------------------------------------- shared helpers

def bench_config(batch: int, overrides: tuple = ()):
    """The shipped tiny classifier config with a fixed per-rank batch."""
    from cosmotrain.train.classifier import ClassifierConfig

    tiny = config.shipped("classifier_tiny.yaml")
    return config.load(ClassifierConfig, tiny, [f"train.batch_size={batch}", *overrides])


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


class Clock:
    """Wall and process-CPU seconds since creation, per ``n`` steps (``per_step(n)``).

    CPU time (all threads of this process) is reported next to wall time: on a shared
    machine it shows the work a step costs even when other jobs steal the cores.
    """

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def per_step(self, n: int) -> tuple[float, float]:
        return (time.perf_counter() - self.wall) / n, (time.process_time() - self.cpu) / n


def time_trainer_steps(run, batches, epoch: int = 0) -> tuple[float, float]:
    """(wall, CPU) seconds per step of the trainer's epoch loop over ``batches`` (all ranks in step)."""
    from cosmotrain.train.loop import RequeueSignal

    run.state.batch = 0
    dist.barrier()
    clock = Clock()
    with RequeueSignal() as signal:
        run.train_epoch(epoch, signal, batches)
    dist.barrier()
    return clock.per_step(run.state.batch)


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

    def run() -> tuple[float, float]:
        clock = Clock()
        for images, labels in batches:
            loss = step(images, labels)
        float(loss)
        return clock.per_step(len(batches))

    return run


def run(args) -> dict:
    dist.init_horovod()
    quiet_logs()
    from cosmotrain.models.classifier import build_classifier

    steps, rounds = (20, 3) if args.quick else (60, 9)
    plain = bench_config(batch=32, overrides=("train.augment=false",))  # the bare loop's math
    augmented = bench_config(batch=32)
    batches = memory_batches(steps, plain.train.batch_size)
    with tempfile.TemporaryDirectory(prefix="cosmotrain-bench-") as tmp:
        data = write_bench_dataset(Path(tmp) / "data", n_train=plain.train.batch_size * steps)
        trainer, with_augment = (prepared_run(cfg, data, Path(tmp) / name)
                                 for cfg, name in ((plain, "run"), (augmented, "run-augment")))
        bare = bare_loop(build_classifier(plain.model, (IMAGE, IMAGE, 3)), batches)
        bare(), time_trainer_steps(trainer, batches), time_trainer_steps(with_augment, batches)  # trace all
        timings = [(time_trainer_steps(trainer, batches, r + 1), bare(), time_trainer_steps(with_augment, batches))
                   for r in range(rounds)]
    figures = ratio_figures([(t, b) for t, b, _ in timings], "trainer", "bare")
    augment = ratio_figures([(a, b) for _, b, a in timings], "augment", "bare")
    return {**figures, "target": TARGET, "ratio_with_augment": augment["ratio"],
            "trainer_with_augment_step_ms": augment["augment_step_ms"], "steps_per_round": steps,
            "batch": plain.train.batch_size, "image": IMAGE, "threads": dist.context().threads,
            "model": config.to_dict(plain.model)}


def ratio_figures(pairs: list, first: str, second: str) -> dict:
    """Ratios of ((wall, cpu), (wall, cpu)) per-step times over alternating rounds.

    ``ratio`` compares each side's best round (as ``timeit`` does): on 2 cores a round
    that another process or the page cache disturbed is only ever slower, so the fastest
    is the cleanest reading of a loop's own cost. The median of the per-round ratios and
    the CPU-time ratio are printed beside it.
    """
    wall = [a[0] / b[0] for a, b in pairs]
    return {"ratio": round(min(a[0] for a, _ in pairs) / min(b[0] for _, b in pairs), 4),
            "median_ratio": round(statistics.median(wall), 4),
            "cpu_ratio": round(min(a[1] for a, _ in pairs) / min(b[1] for _, b in pairs), 4),
            f"{first}_step_ms": round(1e3 * min(a[0] for a, _ in pairs), 3),
            f"{second}_step_ms": round(1e3 * min(b[0] for _, b in pairs), 3),
            f"{first}_cpu_ms": round(1e3 * min(a[1] for a, _ in pairs), 3),
            f"{second}_cpu_ms": round(1e3 * min(b[1] for _, b in pairs), 3),
            "ratios_per_round": [round(r, 4) for r in wall]}
