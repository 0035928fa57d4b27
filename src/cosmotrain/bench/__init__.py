"""Benchmarks: each module ``cosmotrain.bench.<name>`` has ``run(args) -> dict``.

``report`` adds the common keys, writes ``bench/results/NAME.json`` and prints the object
as the last stdout line. Targets are reported, never asserted: a benchmark measures.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from cosmotrain.files import atomic_write_text

# name on the command line → module under cosmotrain.bench
BENCHMARKS = {
    "pipeline": "pipeline",
    "step": "step",
    "scaling": "scaling",
    "input": "input",
    "sample-scaling": "sample_scaling",
    "write": "write",
    "cmb-scaling": "cmb_scaling",
    "gan-quality": "gan_quality",
    "allreduce": "allreduce",
    "scaling-model": "scaling_model",
    "peers": "peers",
    "integrity": "integrity",
    "galaxy-baselines": "galaxy_baselines",
}


def report(name: str, result: dict, results_dir: str | os.PathLike = "bench/results") -> dict:
    """Complete ``result`` (needs ``ratio`` and ``target``), save it and print it last."""
    out = {"name": name, **result, "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    path = Path(results_dir) / f"{name}.json"
    atomic_write_text(path, json.dumps(out, indent=1) + "\n")
    print(json.dumps(out), flush=True)
    return out
