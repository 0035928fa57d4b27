"""A performance model of data-parallel training: compute, ring allreduce, Horovod's fusion.

Weak scaling: every rank keeps its per-rank batch, so a step of n ranks does n times the
work of one rank in the time ``step_seconds``; the efficiency is one rank's step time over
n ranks' (``efficiency``). A step is

    t(n) = c(n) · t_compute + Σ_rounds Σ_buffers [ 2(n−1)·α + 2(n−1)/n · S_buffer · β ]

- ``t_compute``: one rank's step alone (forward, backward, update), measured;
  ``c(n)`` (≥ 1) how much slower it gets when n ranks share the machine's cores (1 on a
  real cluster; measured on the one-machine test cluster, see ``cosmotrain bench
  scaling-model``);
- a *round* is a set of allreduces that must finish before the step can go on: the
  classifier has one (its gradients), the GAN two (D's gradients, then G's, which need D's
  update). Each round is taken as one negotiation, which is what ``allreduce.overlap:
  false`` does (each network's gradients leave as one Horovod group once its backward
  pass is done); the step's small allreduces (NaN/stop flags, BatchNorm statistics, a few
  KB) are counted in its last round;
- Horovod packs the tensors of a round into *fusion buffers* of at most the fusion
  threshold (``fusion_threshold_mb``; 0 = one allreduce per tensor), and each buffer is one
  MPI allreduce: the ring algorithm sends 2(n−1)/n of its S bytes over each rank's link and
  pays 2(n−1) latencies α (Patarasuk & Yuan 2009; NCCL's ring is the same);
- ``fp16`` compression halves the bytes of float32 gradients;
- α and β come from a fit to timed Horovod allreduces (``fit_link``), so Horovod's own
  per-call costs (its cycle, negotiation, the copies into the fusion buffer) are in them;
- a link shaped by a token bucket (``Link.burst``; the test cluster's ``tc tbf``, 0 on a
  real network) passes its bucket's bytes at once after an idle: each round's first
  ``burst`` bytes per rank cost no β. The fit cannot see this (its allreduces run back to
  back, the bucket empty); a step can, since compute comes before each round. The bucket
  refills at the link's rate during the compute before the round (one rank's compute
  time ÷ rounds).

No overlap of communication with the backward pass is assumed. With ``allreduce.overlap:
true`` (the default, Horovod's own way) the prediction is an upper bound on the step time
where the allreduces hide behind the backward pass, and a lower bound where they break
into more rounds than the model counts.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

MB = 2 ** 20


@dataclasses.dataclass(frozen=True)
class Link:
    """A network as the ring allreduce sees it: latency ``alpha`` (s), ``beta`` (s per byte),
    and ``burst``, the bytes a token-bucket shaper lets through at once after an idle (0 for
    a real network)."""

    alpha: float
    beta: float
    burst: float = 0.0

    @property
    def mbit_per_s(self) -> float:
        """The bandwidth 1/β in Mbit/s (10^6 bit/s)."""
        return 8.0 / self.beta / 1e6 if self.beta > 0 else math.inf

    @classmethod
    def from_gbps(cls, gbit_per_s: float, latency_us: float) -> "Link":
        return cls(latency_us * 1e-6, 8.0 / (gbit_per_s * 1e9))


@dataclasses.dataclass(frozen=True)
class Workload:
    """One model's step: ``compute_s`` on one rank alone; ``rounds`` of tensors to allreduce (bytes each)."""

    name: str
    compute_s: float
    rounds: tuple[tuple[int, ...], ...]

    @property
    def gradient_bytes(self) -> int:
        return sum(sum(r) for r in self.rounds)


@dataclasses.dataclass(frozen=True)
class Horovod:
    """What Horovod does with a round's tensors: fusion threshold (MiB) and fp16 compression."""

    fusion_threshold_mb: float = 128.0
    fp16: bool = False


def ring_seconds(nbytes: float, n: int, link: Link, credit: float = 0.0) -> float:
    """One ring allreduce of ``nbytes`` over ``n`` ranks, seconds (0 on one rank); the first
    ``credit`` bytes each rank sends pass at once (a shaper's bucket)."""
    if n <= 1:
        return 0.0
    return 2 * (n - 1) * link.alpha + max(0.0, 2 * (n - 1) / n * nbytes - credit) * link.beta


def fusion_buffers(tensors: Sequence[int], threshold_bytes: float) -> list[int]:
    """Bytes of each allreduce Horovod makes of ``tensors`` (in order), packing up to the threshold.

    A tensor larger than the threshold goes alone; a threshold of 0 sends each on its own.
    """
    buffers: list[int] = []
    for size in tensors:
        if buffers and threshold_bytes > 0 and buffers[-1] + size <= threshold_bytes:
            buffers[-1] += size
        else:
            buffers.append(size)
    return buffers


def comm_seconds(work: Workload, n: int, link: Link, horovod: Horovod = Horovod()) -> float:
    """Seconds per step spent in the allreduces of ``work`` on ``n`` ranks (no overlap)."""
    scale = 0.5 if horovod.fp16 else 1.0
    total = 0.0
    for tensors in work.rounds:
        credit = min(link.burst, work.compute_s / len(work.rounds) / link.beta)
        for nbytes in fusion_buffers([t * scale for t in tensors], horovod.fusion_threshold_mb * MB):
            total += ring_seconds(nbytes, n, link, credit)
            credit = max(0.0, credit - 2 * (n - 1) / n * nbytes)
    return total


def step_seconds(work: Workload, n: int, link: Link, horovod: Horovod = Horovod(), contention: float = 1.0) -> float:
    """Predicted seconds per step of ``work`` on ``n`` ranks."""
    return contention * work.compute_s + comm_seconds(work, n, link, horovod)


def efficiency(work: Workload, n: int, link: Link, horovod: Horovod = Horovod(), contention: float = 1.0) -> float:
    """Predicted weak-scaling efficiency: one rank's step time ÷ n ranks' step time."""
    return work.compute_s / step_seconds(work, n, link, horovod, contention)


def fit_link(sizes: Sequence[float], seconds: Sequence[float], n: int) -> Link:
    """α and β of the ring model fitted to allreduce times ``seconds`` of ``sizes`` bytes on ``n`` ranks.

    Least squares on t = 2(n−1)α + 2(n−1)/n·S·β, each point weighted by 1/t, so that the
    small messages (latency) count as much as the large ones (bandwidth). α, β ≥ 0.
    """
    s, t = np.asarray(sizes, float), np.asarray(seconds, float)
    design = np.stack([np.full_like(s, 2.0 * (n - 1)), 2.0 * (n - 1) / n * s], axis=1) / t[:, None]
    (alpha, beta), *_ = np.linalg.lstsq(design, np.ones_like(t), rcond=None)
    return Link(max(float(alpha), 0.0), max(float(beta), 1e-15))


def hierarchical_link(gpus: int, gpus_per_node: int, intra: Link, inter: Link) -> Link:
    """The link a ring over ``gpus`` GPUs (``gpus_per_node`` per node) runs at.

    Within one node: the intra-node link (NVLink, PCIe). Across nodes, one ring edge per
    node leaves through the node's network, which carries the same 2(n−1)/n·S per step
    as any edge: the slower of the two links sets β, and the ring pays the inter-node
    latency (the larger one) at every hop it does not know better about.
    """
    if gpus <= gpus_per_node:
        return intra
    return Link(max(intra.alpha, inter.alpha), max(intra.beta, inter.beta))
