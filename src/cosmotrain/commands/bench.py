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
  gan-quality     worst-bin C_ell error / sample-variance floor after training <= 1.2
  integrity       opening a 6000-galaxy set, checksums cached / unverified, time <= 2"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=sorted(BENCHMARKS), metavar="NAME", help="which benchmark (see below)")
    parser.add_argument("--quick", action="store_true", help="a shorter run (less precise), for smoke tests")
    parser.add_argument("--results", default="bench/results", metavar="DIR", help="where NAME.json goes")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="gan-quality only: override a key of configs/gan_tiny.yaml, e.g. "
                             "train.spectrum_weight=0 for the adversarial losses alone (repeatable)")
    parser.epilog = TARGETS


def run(args: argparse.Namespace) -> int:
    if args.overrides and args.name != "gan-quality":
        raise UserError(f"--set applies to the gan-quality benchmark only, not to '{args.name}'; drop it")
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
