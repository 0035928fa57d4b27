"""Per-rank running sums of a training loop's metrics, added over ranks when they are reported."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from cosmotrain import dist


class Meters:
    """Per-rank running sums (float64) of named quantities, updated inside the step.

    ``add`` in the step, ``global_sums`` at the epoch's end (an allreduce: every rank must
    call it), ``local``/``load`` to carry a rank's partial sums through a mid-epoch
    checkpoint.
    """

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)
        self.sums = tf.Variable(tf.zeros(len(self.names), tf.float64), trainable=False, name="meters")

    def add(self, *values) -> None:
        """Add one value per name (tensors, any numeric dtype), in ``names`` order."""
        self.sums.assign_add(tf.stack([tf.cast(v, tf.float64) for v in values]))

    def local(self) -> list[float]:
        return [float(v) for v in self.sums.numpy()]

    def load(self, values: Sequence[float]) -> None:
        self.sums.assign(np.asarray(values, dtype=np.float64))

    def reset(self) -> None:
        self.sums.assign(tf.zeros_like(self.sums))

    def global_sums(self) -> dict[str, float]:
        """Sums over all ranks (collective)."""
        total = dist.allreduce_sum_array(np.asarray(self.local(), dtype=np.float64))
        return dict(zip(self.names, (float(v) for v in total)))
