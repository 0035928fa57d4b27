"""`cosmotrain scaling-report`: predicted efficiency and time per epoch on a GPU cluster, 8 to 1024 GPUs.

The model is ``perfmodel`` (validated on the one-machine cluster by ``bench scaling-model``),
with the GPU cluster's links: a ring or tree allreduce (NCCL picks the faster one) whose
bandwidth is the slower of the intra-node link (NVLink, PCIe) and the node's network once
the job spans nodes, plus Horovod's cycle (half a cycle of waiting per allreduce round).
The models are the shipped full configs' (``configs/classifier.yaml``, ``configs/gan.yaml``):
their gradient tensors, their per-rank batch; or one of your own (``gradient_mb``).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from cosmotrain import perfmodel
from cosmotrain.errors import UserError

GPUS = tuple(2 ** k for k in range(3, 11))  # 8 ... 1024


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The GPU cluster the report is for; bandwidths in Gbit/s, latency in μs, cycle in ms."""

    gpus_per_node: int
    intra_gbps: float
    inter_gbps: float
    latency_us: float = 10.0
    fp16: bool = False
    fusion_mb: float = 128.0
    cycle_ms: float = 1.0

    def __post_init__(self):
        if self.gpus_per_node < 1 or min(self.intra_gbps, self.inter_gbps) <= 0 or self.latency_us < 0:
            raise UserError("--gpus-per-node must be >= 1, --intra-gbps and --inter-gbps > 0, --latency-us >= 0")

    def allreduce_seconds(self, nbytes: float, gpus: int) -> float:
        """One allreduce of ``nbytes`` over ``gpus``: the faster of NCCL's ring and (double binary) tree."""
        if gpus <= 1:
            return 0.0
        link = perfmodel.hierarchical_link(gpus, self.gpus_per_node, perfmodel.Link.from_gbps(self.intra_gbps, self.latency_us),
                                           perfmodel.Link.from_gbps(self.inter_gbps, self.latency_us))
        tree = 2 * math.ceil(math.log2(gpus)) * link.alpha + 2 * nbytes * link.beta
        return min(perfmodel.ring_seconds(nbytes, gpus, link), tree)

    def step_seconds(self, work: perfmodel.Workload, gpus: int) -> float:
        """Compute, then each round's fusion buffers one after another, each round after half a cycle."""
        scale = 0.5 if self.fp16 else 1.0
        comm = 0.0
        for tensors in work.rounds:
            comm += self.cycle_ms * 1e-3 / 2 if gpus > 1 else 0.0
            for nbytes in perfmodel.fusion_buffers([t * scale for t in tensors], self.fusion_mb * perfmodel.MB):
                comm += self.allreduce_seconds(nbytes, gpus)
        return work.compute_s + comm


def classifier_rounds(model) -> tuple[tuple[int, ...], ...]:
    """What the classifier's step allreduces: its gradients and the NaN/stop flags (bytes), in one round."""
    return (tuple(_nbytes(v) for v in model.trainable_variables) + (8,),)


def gan_rounds(generator, discriminator, statistics: list) -> tuple[tuple[int, ...], ...]:
    """The GAN's two rounds: D's gradients; then G's, with the BatchNorm statistics and the flags (bytes)."""
    return (tuple(_nbytes(v) for v in discriminator.trainable_variables),
            tuple(_nbytes(v) for v in generator.trainable_variables) + tuple(_nbytes(v) for v in statistics) + (8,))


def _nbytes(variable) -> int:
    return int(variable.shape.num_elements()) * variable.dtype.size


def shipped_workloads(step_ms: list[float]) -> dict[str, tuple[perfmodel.Workload, int]]:
    """The classifier and the GAN of the shipped configs: (workload, per-rank batch) by name."""
    from cosmotrain import config
    from cosmotrain.models.classifier import build_classifier
    from cosmotrain.models.dcgan import build_discriminator, build_generator, moving_statistics
    from cosmotrain.train.classifier import ClassifierConfig
    from cosmotrain.train.gan_config import GanConfig

    clf = config.load(ClassifierConfig, config.shipped("classifier.yaml"))
    gan = config.load(GanConfig, config.shipped("gan.yaml"))
    model = build_classifier(clf.model, (64, 64, 3))
    g, d = build_generator(gan.model), build_discriminator(gan.model)
    gan_ms = step_ms[1] if len(step_ms) > 1 else step_ms[0]
    return {"classifier": (perfmodel.Workload("classifier", step_ms[0] / 1e3, classifier_rounds(model)),
                           clf.train.batch_size),
            "gan": (perfmodel.Workload("gan", gan_ms / 1e3, gan_rounds(g, d, moving_statistics(g) + moving_statistics(d))),
                    gan.train.batch_size)}


def custom_workload(name: str, step_ms: float, gradient_mb: float, batch: int) -> dict:
    """A model of your own: ``gradient_mb`` MiB of gradients in one round (fused into buffers)."""
    tensors = tuple([16 * perfmodel.MB] * int(gradient_mb // 16) + [int(gradient_mb % 16 * perfmodel.MB)])
    return {name: (perfmodel.Workload(name, step_ms / 1e3, (tuple(t for t in tensors if t),)), batch)}


def table(workloads: dict, cluster: Cluster, epoch_samples: int) -> dict:
    """Per model: GPUs, efficiency, step and epoch seconds at 8 ... 1024 GPUs."""
    out = {}
    for name, (work, batch) in workloads.items():
        rows = []
        for gpus in GPUS:
            step = cluster.step_seconds(work, gpus)
            rows.append({"gpus": gpus, "efficiency": work.compute_s / step, "step_ms": 1e3 * step,
                         "epoch_s": math.ceil(epoch_samples / (batch * gpus)) * step})
        out[name] = {"gradient_mb": work.gradient_bytes / perfmodel.MB, "compute_ms": 1e3 * work.compute_s,
                     "batch_per_gpu": batch, "rows": rows}
    return out


def report(workloads: dict, cluster: Cluster, epoch_samples: int, out: str | Path) -> str:
    """The assumptions and the table as text; writes ``out`` (PNG) and ``out`` with .json beside it."""
    from cosmotrain import rundir
    from cosmotrain.plots.scaling import efficiency_figure

    result = table(workloads, cluster, epoch_samples)
    out = Path(out)
    rundir.write_figure(out, efficiency_figure, result, describe(cluster))
    rundir.write_json(out.with_suffix(".json"), {"cluster": dataclasses.asdict(cluster),
                                                 "epoch_samples": epoch_samples, "models": result})
    return "\n".join([*assumptions(cluster, epoch_samples), "", *text_table(result),
                      "", f"wrote {out} and {out.with_suffix('.json')}"])


def describe(cluster: Cluster) -> str:
    return (f"{cluster.gpus_per_node} GPUs/node, {cluster.intra_gbps:g} Gbit/s in a node, {cluster.inter_gbps:g} "
            f"Gbit/s between nodes, {cluster.latency_us:g} us, {'fp16' if cluster.fp16 else 'fp32'} gradients")


def assumptions(cluster: Cluster, epoch_samples: int) -> list[str]:
    return ["assumptions:",
            f"  {describe(cluster)}",
            "  weak scaling: each GPU keeps its per-rank batch; efficiency = one GPU's step / N GPUs' step",
            "  allreduce: the faster of a ring, 2(N-1)a + 2(N-1)/N S/B, and a tree, 2 log2(N) a + 2 S/B (NCCL);",
            "  B = the in-node link within a node, else the slower of it and the node's network",
            f"  Horovod: fusion buffers of {cluster.fusion_mb:g} MiB, half a {cluster.cycle_ms:g} ms cycle per round "
            "(the GAN has two rounds: D, then G); no overlap with the backward pass (a lower bound)",
            f"  an epoch: {epoch_samples} samples"]


def text_table(result: dict) -> list[str]:
    lines = []
    for name, model in result.items():
        lines.append(f"{name}: {model['gradient_mb']:.1f} MiB of gradients, {model['compute_ms']:g} ms compute, "
                     f"batch {model['batch_per_gpu']} per GPU")
        lines.append(f"  {'GPUs':>5} {'efficiency':>10} {'step ms':>9} {'epoch s':>9}")
        lines += [f"  {r['gpus']:>5} {r['efficiency']:>10.3f} {r['step_ms']:>9.1f} {r['epoch_s']:>9.1f}"
                  for r in model["rows"]]
    return lines
