"""Keeping every rank's copy of the training state the same: what both trainers need from Horovod.

Each rank holds a full copy of the networks and optimizers (data parallelism). They start
equal (same seed, same initial weights), the gradients are averaged over ranks before each
update (``dist.distributed_tape``), and three things here keep them equal:

* ``FirstStepSync``: after the first step, every variable is broadcast from rank 0. After,
  not before: the optimizer's slot variables (Adam's moments) exist only once a step has
  run, and they must be broadcast too;
* ``average_statistics``: BatchNorm's moving means and variances are not trained by
  gradients, and each rank saw its own batches, so they are averaged after every step;
* ``agreement``: at the end of a run, a digest of every rank's variables shows that they
  did end equal (a difference is logged as a bug).
"""
from __future__ import annotations

import hashlib
from typing import Callable, Iterable

import numpy as np
import tensorflow as tf

from cosmotrain import dist, logs

log = logs.get("train")


class FirstStepSync:
    """Call after every step: the first call broadcasts ``variables()`` from rank 0, later calls do nothing."""

    def __init__(self, variables: Callable[[], list]):
        self.variables = variables
        self.done = False

    def __call__(self) -> None:
        if not self.done:
            dist.broadcast_variables(self.variables())
            self.done = True


def average_statistics(variables: list, name: str) -> None:
    """Inside a step: replace each of ``variables`` by its mean over ranks (``name`` tags the allreduces)."""
    if dist.context().size == 1:
        return
    for i, var in enumerate(variables):
        var.assign(dist.allreduce_mean(tf.convert_to_tensor(var), name=f"{name}_{i}"))


def weights_digest(variables: Iterable[tf.Variable]) -> str:
    """sha256 of the variables' bytes, in order (to compare states across ranks or runs)."""
    digest = hashlib.sha256()
    for v in variables:
        digest.update(np.ascontiguousarray(v.numpy()).tobytes())
    return digest.hexdigest()


def agreement(variables: Iterable[tf.Variable]) -> tuple[bool, str]:
    """(whether every rank holds the same ``variables``, rank 0's digest); collective."""
    digests = dist.allgather_object(weights_digest(variables))
    identical = len(set(digests)) == 1
    if not identical:
        log.error("ranks ended with different weights (%s); please report this", digests)
    return identical, digests[0]
