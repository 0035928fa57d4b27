"""`bench allreduce`: latency α and bandwidth β of the cluster's links, from Horovod allreduces.

Starts the multi-node cluster of ``scripts/cluster`` (``--nodes N``, default 2; one rank
per node), shapes every node's link to ``--link-mbit`` Mbit/s (default: unshaped), and
times Horovod allreduces of float32 tensors of 4 KB to 64 MB (×4 apart), each called in a
``tf.function`` the way the training step calls them, back to back. The mean time per
size (what a step pays on average, the statistic the step times are) is fitted by the ring
model t(S) = 2(n−1)·α + 2(n−1)/n·S·β (``perfmodel.fit_link``); the medians are kept beside
it. The two differ on slow links: there an allreduce's time is skewed (at 50 Mbit/s a
quarter to a half of the 1 MB allreduces take 1.4–2 × the fastest), and the median hides that.

``ratio`` = the fitted bandwidth 1/β ÷ the shaped link rate: the share of the link an
allreduce gets (TCP and Ethernet headers take ~5 %). Target ≥ 0.9; none when unshaped.
"""
from __future__ import annotations

import json
import statistics
import time

from cosmotrain import dist, perfmodel

TARGET = 0.9
SIZES = tuple(4096 * 4 ** k for k in range(8))  # 4 KB ... 64 MB
WORKER = "import sys; from cosmotrain.bench.allreduce import worker; worker(sys.argv[1])"


def worker(spec: str) -> None:
    """One rank: time allreduces of each size; rank 0 prints {"sizes": [...], "seconds": [...]}."""
    spec = json.loads(spec)
    ctx = dist.init_horovod(threads=1, allreduce=dist.AllreduceConfig(**spec.get("allreduce", {})))
    result = sweep(spec["sizes"], spec["seconds_per_size"])  # every rank takes part
    if ctx.is_root:
        print(json.dumps(result), flush=True)


def sweep(sizes: list[int], budget: float) -> dict:
    """Mean (and median) seconds of a Horovod allreduce of each of ``sizes`` bytes (float32), all ranks together."""
    import tensorflow as tf

    means, medians = [], []
    for nbytes in sizes:
        reduce = tf.function(lambda x, n=nbytes: dist.allreduce_mean(x, name=f"bench_allreduce_{n}"), autograph=False)
        x = tf.ones([nbytes // 4], tf.float32)
        reduce(x)  # trace; Horovod negotiates the new tensor once
        first = _timed(reduce, x)
        # Every rank must make the same number of calls: rank 0's choice counts.
        reps = dist.broadcast_object(max(3, min(40, int(budget / max(first, 1e-6)))))
        times = [_timed(reduce, x) for _ in range(reps)]
        means.append(statistics.fmean(times))
        medians.append(statistics.median(times))
    return {"sizes": list(sizes), "seconds": means, "median_seconds": medians}


def _timed(fn, x) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def measure(cluster, nodes: int, sizes: tuple, budget: float, allreduce: dict | None = None) -> dict:
    """The sweep on ``nodes`` nodes of a running ``bench.cluster.Cluster``, with its α–β fit."""
    spec = {"sizes": list(sizes), "seconds_per_size": budget, "allreduce": allreduce or {}}
    result = cluster.srun(nodes, WORKER, json.dumps(spec))[0]
    link = perfmodel.fit_link(result["sizes"], result["seconds"], nodes)
    return {**result, "alpha_us": round(link.alpha * 1e6, 2), "beta_ns_per_byte": round(link.beta * 1e9, 4),
            "fitted_mbit_per_s": round(link.mbit_per_s, 1), "link": link}


def run(args) -> dict:
    from cosmotrain.bench.cluster import cluster

    nodes = args.nodes[0] if args.nodes else 2
    mbit = args.link_mbit[0] if args.link_mbit else 0
    sizes, budget = (SIZES[:6], 0.3) if args.quick else (SIZES, 2.0)
    with cluster(nodes) as running:  # unshaped again on leaving
        running.shape(mbit)
        fit = measure(running, nodes, sizes, budget)
    fit.pop("link")
    ratio = round(fit["fitted_mbit_per_s"] / mbit, 4) if mbit else None
    return {"ratio": ratio, "target": TARGET if mbit else None, "nodes": nodes, "link_mbit": mbit or None,
            **fit, "model": "t(S) = 2(n-1) alpha + 2(n-1)/n S beta"}
