"""P8 `bench scaling-model`: the scaling model's predicted efficiency ÷ the measured one, across nodes.

On the multi-node cluster of ``scripts/cluster`` (started here; one single-threaded rank per
node), for the classifier and the GAN (tiny configs, per-rank batch 32, the real trainers'
steps on in-memory batches) and for each link bandwidth (``--link-mbit``, default 50, 200,
1000 Mbit/s) and node count (``--nodes``, default 2 and 4):

1. unshaped, no communication: one rank alone, the compute time of a step, t₁; and n
   independent ranks at once (``srun --mpi=none``), right before the n-rank point
   (``contention_other_launch``, kept for comparison);
2. links shaped: one launch of n ranks times Horovod allreduces of 4 KB–64 MB and fits the
   links' α and β (``bench allreduce``), then times both trainers' steps, t(n), and the same
   steps without their collectives (``dist.compute_only``), rounds alternating, each real
   round after one untimed step that warms the links again: that compute ÷ t₁ is c(n), how
   much slower a step's compute gets when n ranks share this machine's cores (1 on a real
   cluster; up to n/cores here). Taken in the same launch, minutes of host drift and one
   launch's luck of placement cancel (a separate launch's c(n) was off by up to 10 %);
3. predicts t(n) from t₁, c(n), α, β, the shaper's bucket (``burst_kb``: what a link passes
   at once after an idle, which back-to-back allreduces never see), the models' gradient
   tensors and Horovod's fusion threshold (``perfmodel``), and compares efficiencies
   E = t₁/t(n). Each point also shows
   ``comm_alone_ms``, the step's allreduces timed alone (same tensors, same rounds): beside
   the predicted ``comm_ms`` it tells a wrong α–β or fusion model from communication that
   overlaps the backward pass or fights the compute for the cores.

Each point's ``ratio`` = predicted ÷ measured efficiency; the headline ``ratio`` is the one
farthest from 1 (goal: within 0.9–1.1). ``variants`` repeat one point with fp16 gradients, with
fusion off and with each network's gradients sent as one group after its backward pass
(``allreduce.fp16``, ``allreduce.fusion_threshold_mb=0``, ``allreduce.overlap=false``), measured
and predicted. ``--set KEY=VALUE`` (allreduce keys) changes every point's settings.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import socket
import statistics
from pathlib import Path

from cosmotrain import config, dist, perfmodel
from cosmotrain.bench import allreduce
from cosmotrain.bench.cluster import leave_job_step
from cosmotrain.scaling_report import classifier_rounds, gan_rounds

TARGET = (0.9, 1.1)
BATCH = 32
MODELS = ("classifier", "gan")
WORKER = "import sys; from cosmotrain.bench.scaling_model import worker; worker(sys.argv[1])"


# ---------------------------------------------------------------- one rank (srun)

def worker(spec: str) -> None:
    """One rank: (the allreduce sweep and) both trainers' step times; rank 0 prints them as JSON."""
    from cosmotrain.bench.step import quiet_logs

    spec = json.loads(spec)
    if spec["alone"]:  # srun --mpi=none
        leave_job_step()
    settings = dist.AllreduceConfig(**spec["allreduce"])
    ctx = dist.init_horovod(threads=1, allreduce=settings)
    quiet_logs()
    out = {"host": socket.gethostname(), "ranks": ctx.size, "horovod": dist.horovod_settings()}
    if spec["sweep"]:
        out["sweep"] = allreduce.sweep(spec["sizes"], spec["seconds_per_size"])
    scratch = Path(spec["scratch"])
    compute_too = not spec["alone"]
    out["classifier"] = classifier_steps(settings, scratch, spec["steps"], spec["rounds"], compute_too)
    out["gan"] = gan_steps(settings, spec["steps"], spec["rounds"], compute_too)
    if not spec["alone"]:
        for model in MODELS:
            out[model]["comm_s"] = rounds_alone(out[model]["rounds"], settings, spec["steps"])
    if ctx.is_root:
        print(json.dumps(out), flush=True)


def classifier_steps(settings, scratch: Path, steps: int, rounds: int, compute_too: bool) -> dict:
    """The classifier trainer's median seconds per step, the bytes it allreduces per step and,
    with ``compute_too``, the median of the same step without its collectives (rounds alternate)."""
    from cosmotrain.bench.step import bench_config, memory_batches, prepared_run, time_trainer_steps

    cfg = dataclasses.replace(bench_config(BATCH), allreduce=settings)
    batches = memory_batches(steps, BATCH, seed=1 + dist.context().rank)
    runs = {}
    for key in _loops(compute_too):
        with _collectives(key):
            run = prepared_run(cfg, scratch / "data", scratch / f"run-{socket.gethostname()}-{os.getpid()}-{key}")
            time_trainer_steps(run, batches[:5])  # trace, first-step broadcast, Horovod's negotiation
        runs[key] = run

    def one_round(key, r):
        with _collectives(key):
            time_trainer_steps(runs[key], batches[:1], r + 1)  # links warm again after the other loop's idle
            return time_trainer_steps(runs[key], batches, r + 1)[0]

    out = _alternate(list(runs), rounds, one_round)
    return {**out, "rounds": classifier_rounds(runs["step_s"].trainer.model)}


def gan_steps(settings, steps: int, rounds: int, compute_too: bool) -> dict:
    """The GAN trainer's median seconds per step (D's round, then G's), the bytes of each round
    and, with ``compute_too``, the median of the same step without its collectives."""
    import numpy as np
    import tensorflow as tf

    from cosmotrain.bench.step import Clock
    from cosmotrain.models.dcgan import moving_statistics
    from cosmotrain.models.generator import Transform
    from cosmotrain.train.gan_config import GanConfig
    from cosmotrain.train.gan_step import GanTrainer

    plain = ["train.spectrum_weight=0", "train.variance_weight=0", "train.scatter_weight=0", f"train.batch_size={BATCH}"]
    cfg = dataclasses.replace(config.load(GanConfig, config.shipped("gan_tiny.yaml"), plain), allreduce=settings)
    rng = np.random.default_rng(dist.context().rank)
    size = cfg.model.image_size
    real = [tf.constant(rng.normal(0, 100, (BATCH, size, size)).astype(np.float32)) for _ in range(steps)]
    go = tf.constant(False)
    trainers = {}
    for key in _loops(compute_too):
        with _collectives(key):
            trainer = GanTrainer(cfg, Transform(0.0, 500.0), steps, None)
            trainer.train_step(real[0], tf.constant(0, tf.int64), go)
            trainer.after_first_step()
        trainers[key] = trainer

    def one_round(key, r):
        with _collectives(key):
            trainers[key].train_step(real[-1], tf.constant(r * steps, tf.int64), go)  # warm links, untimed
            dist.barrier()
            clock = Clock()
            for i, batch in enumerate(real):
                trainers[key].train_step(batch, tf.constant(1 + r * steps + i, tf.int64), go)
            dist.barrier()
            return clock.per_step(steps)[0]

    out = _alternate(list(trainers), rounds, one_round, warmup=True)
    G, D = trainers["step_s"].generator, trainers["step_s"].discriminator
    return {**out, "rounds": gan_rounds(G, D, moving_statistics(G) + moving_statistics(D))}


def _loops(compute_too: bool) -> tuple:
    """The loops a model's steps are timed in: the real step, and with ``compute_too`` its compute alone."""
    return ("step_s", "compute_s") if compute_too else ("step_s",)


def _collectives(key: str):
    """The real step (``step_s``) talks to the other ranks; ``compute_s`` is the same step kept local."""
    return dist.compute_only() if key == "compute_s" else contextlib.nullcontext()


def _alternate(keys: list, rounds: int, one_round, warmup: bool = False) -> dict:
    """Median seconds per step of each key's loop, rounds alternating between the keys so that
    the host's drifting speed hits them alike (``warmup``: one round each first, not counted)."""
    times = {key: [] for key in keys}
    for r in range(rounds + warmup):
        for key in keys:
            times[key].append(one_round(key, r))
    return {key: statistics.median(t[warmup:]) for key, t in times.items()}


def rounds_alone(rounds: list, settings: dist.AllreduceConfig, reps: int) -> float:
    """Mean seconds of a step's allreduce rounds alone (a mean over calls, like the step times):
    tensors of the gradients' sizes, issued in one ``tf.function`` per round as the step
    issues them (one group, or one allreduce each with ``overlap``), rounds one after another.

    The step minus its compute should take this long if communication does not overlap it.
    """
    import tensorflow as tf

    from cosmotrain.bench.step import Clock

    dtype = tf.float16 if settings.fp16 else tf.float32
    tensors = [[tf.zeros([max(1, b // 4)], dtype) for b in r] for r in rounds]

    def send(xs, i):
        if settings.overlap:
            return [dist.allreduce_mean(x, name=f"round{i}_{j}") for j, x in enumerate(xs)]
        return dist.grouped_allreduce_mean(xs, name=f"round{i}")

    calls = [tf.function(lambda xs, i=i: send(xs, i), autograph=False) for i in range(len(rounds))]
    times = []
    for _ in range(reps + 1):
        clock = Clock()
        for call, xs in zip(calls, tensors):
            call(xs)
        times.append(clock.per_step(1)[0])
    return statistics.fmean(times[1:])


# ---------------------------------------------------------------- the benchmark

def run(args) -> dict:
    from cosmotrain.bench.cluster import cluster
    from cosmotrain.bench.step import write_bench_dataset

    nodes = sorted(args.nodes or ([2] if args.quick else [2, 4]))
    mbits = args.link_mbit or ([200] if args.quick else [50, 200, 1000])
    size = dict(steps=10, rounds=2, sizes=allreduce.SIZES[:6], seconds_per_size=0.3) if args.quick else \
        dict(steps=30, rounds=5, sizes=allreduce.SIZES, seconds_per_size=2.0)
    base = allreduce_overrides(args.overrides)
    with cluster(max(nodes)) as running, running.scratch() as tmp:
        write_bench_dataset(Path(tmp) / "data", n_train=4 * BATCH)

        def launch(n: int, sweep: bool, mpi: bool = True, **allreduce_settings) -> list[dict]:
            spec = {**size, "sizes": list(size["sizes"]), "scratch": tmp, "sweep": sweep, "alone": not mpi,
                    "allreduce": {**base, **allreduce_settings}}
            return running.srun(n, WORKER, json.dumps(spec), mpi=mpi)

        points, variants, baselines = measure_points(running, launch, nodes, mbits, args.quick, bool(base.get("fp16")))
    worst = max(points, key=lambda p: abs(math.log(p["ratio"])))
    return {"ratio": worst["ratio"], "target": list(TARGET), "allreduce": base, "points": points, "variants": variants,
            "baselines": baselines, "per_rank_batch": BATCH, "threads_per_rank": 1, "machine_cores": os.cpu_count()}


def allreduce_overrides(overrides: list[str]) -> dict:
    """``--set allreduce.KEY=VALUE`` as AllreduceConfig keyword arguments, checked as any config
    override is (keys, types, ranges) before the cluster starts."""
    raw: dict = {}
    for item in overrides:
        if not item.strip().startswith("allreduce."):
            raise config.ConfigError(f"scaling-model takes --set allreduce.KEY=VALUE only (fp16, fusion_threshold_mb, "
                                     f"cycle_time_ms, overlap), not {item!r}")
        config.apply_override(raw, item)
    section = raw.get("allreduce", {})
    checked = config.from_dict(dist.AllreduceConfig, section, "allreduce")
    return {name: getattr(checked, name) for name in section}


def contention(alone: dict, n: int) -> dict:
    """c(n) per model: mean step time of n ranks running at once, without talking, ÷ one rank's."""
    return {m: round(statistics.mean(r[m]["step_s"] for r in alone[n]) / alone[1][0][m]["step_s"], 4)
            for m in MODELS}


def measure_points(running, launch, nodes: list, mbits: list, quick: bool,
                   fp16: bool = False) -> tuple[list, list, dict]:
    """Measured and predicted points for every bandwidth × node count, the fp16/no-fusion/grouped
    variants, and the separate launches' baselines of each bandwidth (one rank's step, c(n)).

    One rank's step is taken again before each bandwidth's points (links unshaped, no
    communication): on a shared host the compute's speed drifts over the half hour of the
    run. Each point's c(n) comes from its own launch (``worker``).
    """
    points, variants, baselines = [], [], {}
    for mbit in mbits:
        running.shape(0)
        alone = {1: launch(1, False, mpi=False)}
        for n in nodes:
            running.shape(0)
            alone[n] = launch(n, False, mpi=False)
            burst = running.shape(mbit)
            measured = launch(n, True)[0]
            link = perfmodel.fit_link(measured["sweep"]["sizes"], measured["sweep"]["seconds"], n)
            link = dataclasses.replace(link, burst=burst)
            points += [point(m, n, mbit, measured, link, alone, fp16) for m in MODELS]
            if not quick and n == nodes[0] and mbit == mbits[len(mbits) // 2]:
                for name, settings in (("fp16", {"fp16": True}), ("no-fusion", {"fusion_threshold_mb": 0}),
                                       ("grouped", {"overlap": False})):
                    other = launch(n, False, **settings)[0]
                    variants += [{**point(m, n, mbit, other, link, alone, fp16=settings.get("fp16", fp16)),
                                  "variant": name, "baseline_measured_step_ms": round(1e3 * measured[m]["step_s"], 3)}
                                 for m in MODELS]
        baselines[str(mbit)] = {"one_rank_step_ms": {m: round(1e3 * alone[1][0][m]["step_s"], 3) for m in MODELS},
                                "contention": {str(n): contention(alone, n) for n in alone}}
    running.shape(0)
    return points, variants, baselines


def point(model: str, n: int, mbit: int, measured: dict, link: perfmodel.Link, alone: dict,
          fp16: bool = False) -> dict:
    """One model × nodes × bandwidth: predicted and measured efficiency and their ratio."""
    one = alone[1][0][model]["step_s"]
    work = perfmodel.Workload(model, one, tuple(tuple(r) for r in measured[model]["rounds"]))
    horovod = perfmodel.Horovod(measured["horovod"]["fusion_threshold_mb"], fp16)
    c = measured[model]["compute_s"] / one
    predicted = perfmodel.step_seconds(work, n, link, horovod, c)
    took = measured[model]["step_s"]
    return {"model": model, "nodes": n, "link_mbit": mbit, "predicted_efficiency": round(one / predicted, 4),
            "one_rank_step_ms": round(1e3 * one, 3),
            "measured_efficiency": round(one / took, 4), "ratio": round(took / predicted, 4),
            "predicted_step_ms": round(1e3 * predicted, 3), "measured_step_ms": round(1e3 * took, 3),
            "contention": round(c, 4), "contention_other_launch": contention(alone, n)[model],
            "comm_ms": round(1e3 * perfmodel.comm_seconds(work, n, link, horovod), 3),
            "comm_alone_ms": round(1e3 * measured[model].get("comm_s", math.nan), 3),
            "gradient_mb": round(work.gradient_bytes / perfmodel.MB, 3), "alpha_us": round(link.alpha * 1e6, 2),
            "fitted_mbit_per_s": round(link.mbit_per_s, 1), "burst_kb": round(link.burst / 1e3, 1)}
