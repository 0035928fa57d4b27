"""Checksums on open: the cost of verifying a 6000-galaxy dataset, with and without the cache.

A dataset of 6000 synthetic galaxies (64x64, the README's size; 600 with --quick) is made by
``data galaxies``; then its three splits are opened as training and evaluation do
(``ShardSet``), best of several rounds each:

* unverified: ``verify=False`` (the manifest, sizes, HDF5 schema; the baseline);
* cold: every shard hashed (an empty verified-file cache: the first job on a new copy);
* warm: the cache says every shard is verified and unchanged (every later job).

``ratio`` = warm ÷ unverified open time (target ≤ 2: a cached check costs no more than the
open itself, a few milliseconds);
``cold_ratio`` and ``hash_mb_per_s`` show what the first open costs. The files sit in the
page cache, so the cold figure is sha256's speed, not the disk's. ``validate_seconds``
is ``cosmotrain validate dataset`` (hash, schema and every value) on one process.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

TARGET = 2.0
SPLITS = ("train", "val", "test")
KINDS = ("unverified", "cold", "warm")


def run(args) -> dict:
    from cosmotrain import dist, logs
    from cosmotrain.data import checksums
    from cosmotrain.data.galaxy_dataset import make_dataset

    dist.init_mpi()
    logs.setup()
    n, rounds = (600, 6) if args.quick else (6000, 12)
    with tempfile.TemporaryDirectory(prefix="cosmotrain-bench-") as tmp:
        os.environ["COSMOTRAIN_CACHE"] = str(Path(tmp) / "cache")
        root = Path(tmp) / "galaxies"
        make_dataset({"synthetic": n}, str(root), False, None, [])
        megabytes = sum(p.stat().st_size for p in root.glob("*.h5")) / 1e6
        opened = {kind: [] for kind in KINDS}
        for r in range(rounds):
            for kind in KINDS[r % 3:] + KINDS[:r % 3]:  # the order rotates: no side always goes first
                if kind != "unverified":
                    shutil.rmtree(checksums.cache_dir(), ignore_errors=True)
                if kind == "warm":
                    _open_all(root, verify=True)  # fills the cache
                opened[kind].append(_open_all(root, verify=kind != "unverified"))
        validate = _validate_seconds(root)
    best = {k: min(v) for k, v in opened.items()}
    return {"ratio": round(best["warm"] / best["unverified"], 4), "target": TARGET,
            "cold_ratio": round(best["cold"] / best["unverified"], 3),
            **{f"{k}_open_seconds": round(v, 5) for k, v in best.items()},
            "hash_mb_per_s": round(megabytes / max(best["cold"] - best["unverified"], 1e-9), 1),
            "validate_seconds": round(validate, 3), "galaxies": n, "megabytes": round(megabytes, 2),
            "rounds": rounds}


def _open_all(root: Path, verify: bool) -> float:
    """Seconds to open (and close) the three splits of ``root``."""
    from cosmotrain.data.reader import ShardSet

    start = time.perf_counter()
    for split in SPLITS:
        ShardSet(root, split, kind="galaxies", verify=verify).close()
    return time.perf_counter() - start


def _validate_seconds(root: Path) -> float:
    from cosmotrain.data.reader import read_manifest
    from cosmotrain.data.shards import schema_of
    from cosmotrain.validate_dataset import shard_problems

    manifest = read_manifest(root)
    start = time.perf_counter()
    for entry in manifest["splits"].values():
        for shard in entry["shards"]:
            assert not shard_problems(root, "galaxies", schema_of("galaxies"), shard)
    return time.perf_counter() - start
