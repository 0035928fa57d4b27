"""`cosmotrain bench NAME`: run one benchmark, print its JSON result last."""
from __future__ import annotations

import argparse
import importlib

from cosmotrain.bench import BENCHMARKS, report
from cosmotrain.commands import Command
from cosmotrain.errors import UserError

TARGETS = """benchmarks (target on this 2-core machine):
  pipeline        P1 sharded tf.data pipeline / raw h5py reads, samples/s     >= 0.95
  step            P2 trainer step / bare tf.function loop, time               <= 1.03
  scaling         P3 2 ranks x 1 thread / 2 x (1 rank x 1 thread), samples/s >= 0.95
  input           P4 step with HDF5 pipeline / with in-memory batches, time   <= 1.02
  sample-scaling  P5 GAN sampling 2 ranks / 1 rank, samples/s                 >= 1.9
  write           P6 per-rank HDF5 writes / raw NumPy writes, throughput      >= 0.9
  cmb-scaling     P7 CMB patch simulation 2 ranks / 1 rank, patches/s         >= 1.9
  gan-quality     share of 20 latent sets of 1024 GAN patches passing the whole referee   >= 0.8
  integrity       opening a 6000-galaxy set, checksums cached / unverified, time <= 2
  allreduce       link alpha, beta from Horovod allreduces on the cluster; 1/beta / link rate  >= 0.9
  scaling-model   P8 predicted / measured weak-scaling efficiency, 2 and 4 nodes   0.9-1.1
  peers           P9 cosmotrain / plain Keras fit (classifier; GAN), samples/s     >= 1.0
  galaxy-baselines  best simple-feature classifier's accuracy on the kept test galaxies <= 0.80
allreduce and scaling-model start a SLURM cluster of network namespaces on this machine
(scripts/cluster/, needs root) and shape its links with tc."""
CLUSTER_BENCHMARKS = ("allreduce", "scaling-model")
CONFIGURED = ("gan-quality", "galaxy-baselines", "scaling-model")  # the benchmarks --set applies to


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=sorted(BENCHMARKS), metavar="NAME", help="which benchmark (see below)")
    parser.add_argument("--quick", action="store_true", help="a shorter run (less precise), for smoke tests")
    parser.add_argument("--results", default="bench/results", metavar="DIR", help="where NAME.json goes")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="gan-quality: override a key of configs/gan_referee.yaml (--quick: gan_tiny.yaml), "
                             "e.g. train.seed=777; galaxy-baselines: of configs/galaxies.yaml, e.g. "
                             "synthetic.generator=simple; scaling-model: an allreduce setting of every point, "
                             "e.g. allreduce.overlap=false (repeatable)")
    parser.add_argument("--data", metavar="DATASET",
                        help="galaxy-baselines only: score the baselines on this galaxies dataset instead of "
                             "making synthetic galaxies")
    parser.add_argument("--latent-sets", type=int, metavar="N",
                        help="gan-quality only: fresh latent sets each checkpoint is judged on (default 20)")
    parser.add_argument("--set-size", type=int, metavar="N",
                        help="gan-quality only: patches per latent set (default 1024)")
    parser.add_argument("--nodes", type=_counts, metavar="N[,N...]",
                        help="allreduce, scaling-model: node counts (default 2; 2,4)")
    parser.add_argument("--link-mbit", type=_counts, metavar="MBIT[,MBIT...]",
                        help="allreduce, scaling-model: link bandwidths, Mbit/s (default unshaped; 50,200,1000)")
    parser.epilog = TARGETS


def _counts(text: str) -> list[int]:
    """ "2,4" -> [2, 4]: positive whole numbers."""
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every number must be >= 1")
    return values


def run(args: argparse.Namespace) -> int:
    if args.overrides and args.name not in CONFIGURED:
        raise UserError(f"--set applies to the {', '.join(CONFIGURED)} benchmarks only, not to '{args.name}'; "
                        f"drop it")
    if args.data and args.name != "galaxy-baselines":
        raise UserError(f"--data applies to the galaxy-baselines benchmark only, not to '{args.name}'; drop it")
    if (args.latent_sets or args.set_size) and args.name != "gan-quality":
        raise UserError(f"--latent-sets and --set-size apply to the gan-quality benchmark only, not to "
                        f"'{args.name}'; drop them")
    if (args.nodes or args.link_mbit) and args.name not in CLUSTER_BENCHMARKS:
        raise UserError(f"--nodes and --link-mbit apply to {' and '.join(CLUSTER_BENCHMARKS)} only, not to "
                        f"'{args.name}'; drop them")
    try:
        module = importlib.import_module(f"cosmotrain.bench.{BENCHMARKS[args.name]}")
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("cosmotrain.bench."):
            raise UserError(f"benchmark '{args.name}' is not implemented in this version") from None
        raise
    report(args.name, module.run(args), args.results)
    return 0


COMMANDS = [Command("bench", None, "run a benchmark", add_arguments, run,
                    description="Run one benchmark in one process tree; the last stdout line is a JSON "
                                "object with name, ratio, target and the figures behind the ratio.")]
