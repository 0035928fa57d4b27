"""`cosmotrain scaling-report`: predicted weak-scaling efficiency on a GPU cluster, 8 to 1024 GPUs."""
from __future__ import annotations

import argparse

from cosmotrain.commands import Command

HELP = """Predict weak-scaling efficiency and time per epoch of the classifier and the GAN (the
shipped configs/classifier.yaml and configs/gan.yaml) on 8 to 1024 GPUs, from one GPU's step
time and the cluster's links. Prints the assumptions and a table; writes a PNG and a JSON.

The model (docs/cluster.md#the-scaling-model) is the one `cosmotrain bench scaling-model`
checks against measurements across the nodes of a real (one-machine) SLURM cluster.

examples:
  cosmotrain scaling-report --step-ms 120 --gpus-per-node 4 --intra-gbps 600 --inter-gbps 100
  cosmotrain scaling-report --step-ms 120 80 --gpus-per-node 8 --intra-gbps 2400 --inter-gbps 200 --fp16-allreduce
  cosmotrain scaling-report --step-ms 600 --gradient-mb 170 --name resnet101 --gpus-per-node 4 \\
      --intra-gbps 80 --inter-gbps 25"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--step-ms", type=float, nargs="+", required=True, metavar="MS",
                        help="one GPU's compute time per step, ms: one value for both models, or CLASSIFIER GAN")
    parser.add_argument("--gpus-per-node", type=int, required=True, metavar="G")
    parser.add_argument("--intra-gbps", type=float, required=True, metavar="B1",
                        help="GPU-to-GPU bandwidth within a node, Gbit/s (NVLink, PCIe)")
    parser.add_argument("--inter-gbps", type=float, required=True, metavar="B2",
                        help="each node's network bandwidth, Gbit/s (InfiniBand, Slingshot, Ethernet)")
    parser.add_argument("--fp16-allreduce", action="store_true", help="gradients sent as float16 (allreduce.fp16)")
    parser.add_argument("--latency-us", type=float, default=10.0, metavar="US", help="per-hop latency (default 10)")
    parser.add_argument("--fusion-mb", type=float, default=128.0, metavar="MB",
                        help="Horovod's fusion threshold (allreduce.fusion_threshold_mb; default 128)")
    parser.add_argument("--cycle-ms", type=float, default=1.0, metavar="MS", help="Horovod's cycle time (default 1)")
    parser.add_argument("--epoch-samples", type=int, default=100_000, metavar="N",
                        help="samples per epoch, for the time per epoch (default 100000)")
    parser.add_argument("--gradient-mb", type=float, metavar="MB",
                        help="instead of the two models: one of your own with this many MiB of gradients")
    parser.add_argument("--name", default="custom", help="its name (with --gradient-mb)")
    parser.add_argument("--batch", type=int, default=64, help="its per-GPU batch (with --gradient-mb; default 64)")
    parser.add_argument("--out", default="scaling-report.png", metavar="FILE.png",
                        help="the figure (default scaling-report.png); the table goes beside it as .json")


def run(args: argparse.Namespace) -> int:
    from cosmotrain import logs, scaling_report
    from cosmotrain.errors import UserError

    logs.setup(args.verbose)
    if len(args.step_ms) > 2 or min(args.step_ms) <= 0:
        raise UserError("--step-ms takes one or two positive times in ms (CLASSIFIER [GAN])")
    cluster = scaling_report.Cluster(args.gpus_per_node, args.intra_gbps, args.inter_gbps, args.latency_us,
                                     args.fp16_allreduce, args.fusion_mb, args.cycle_ms)
    if args.gradient_mb is not None:
        workloads = scaling_report.custom_workload(args.name, args.step_ms[0], args.gradient_mb, args.batch)
    else:
        workloads = scaling_report.shipped_workloads(args.step_ms)
    print(scaling_report.report(workloads, cluster, args.epoch_samples, args.out))
    return 0


COMMANDS = [Command("scaling-report", None, "predict scaling efficiency on a GPU cluster (8-1024 GPUs)",
                    add_arguments, run, description=HELP)]
