"""Node-local staging: each node copies the shards its ranks will read to fast local storage.

The CosmoFlow practice. On a cluster the dataset sits on a shared parallel filesystem that
every rank of every node reads at once; copying each node's part once to node-local disk
or memory (``$TMPDIR``, ``/dev/shm``) before training takes that load off the shared
filesystem for the rest of the run. ``stage`` does it for the ranks of a job:

- the ranks find out which of them share a node (by hostname); the lowest rank of each node
  stages for all of them, so a node copies each shard once however many ranks it runs;
- it copies every shard one of its ranks will read (the caller says which samples each
  rank reads, ``Reads``), checks each copy's sha256 against the manifest and renames it
  into place; a copy already there from an earlier job is checked and reused, or replaced
  when it does not match;
- the shards no rank of the node reads are symbolic links to the originals, so the staged
  folder is a complete dataset (``reader.ShardSet`` checks every shard of a split);
- the copy is timed; rank 0 logs one line per node, and an error on any node (disk full,
  a corrupted shard) is raised as the same one-line ``UserError`` on every rank.

The staged folder is ``STAGE_DIR/cosmotrain-stage/<dataset>-<manifest digest>``, the same
path on every node, so ranks open it like any dataset.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from cosmotrain import dist, logs
from cosmotrain.data import checksums
from cosmotrain.data.reader import read_manifest
from cosmotrain.data.shards import MANIFEST
from cosmotrain.errors import UserError
from cosmotrain.files import atomic_path, atomic_write_text, sha256

log = logs.get("data")

FOLDER = "cosmotrain-stage"
OUTCOMES = ("copied", "reused", "replaced", "linked")  # a shard's copy made; good one kept; bad one redone; link
# split name -> function of a rank: the (start, stop) sample ranges of that split it reads
Reads = dict[str, Callable[[int], Iterable[tuple[int, int]]]]


@dataclasses.dataclass
class NodeReport:
    """What one node's staging did: shards by what happened to them, bytes copied (B), wall seconds."""

    host: str
    ranks: list
    counts: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None


def stage(root: str | os.PathLike, stage_dir: str, reads: Reads) -> Path:
    """Stage dataset ``root`` for this job's ranks under ``stage_dir``; the staged folder.

    Collective: every rank calls it. Returns the same path on every rank; on each node it
    holds verified copies of the shards that node's ranks read.
    """
    manifest_text = (Path(root) / MANIFEST).read_text()
    target = staged_root(root, stage_dir, manifest_text)
    ctx = dist.context()
    hosts = dist.allgather_object(socket.gethostname())
    node_ranks = [r for r, host in enumerate(hosts) if host == hosts[ctx.rank]]
    report = None
    if ctx.rank == node_ranks[0]:
        report = stage_node(Path(root), target, manifest_text, reads, node_ranks)
    reports = [r for r in dist.allgather_object(report) if r is not None]
    failed = [r.error for r in reports if r.error]
    if failed:
        raise UserError(failed[0])
    for r in reports:
        log.info("staging: node %s (rank%s %s): %s", r.host, "s" if len(r.ranks) > 1 else "",
                 ",".join(map(str, r.ranks)), describe(r))
    log.info("staging: training reads %s on every node", target)
    return target


def staged_root(root: str | os.PathLike, stage_dir: str, manifest_text: str) -> Path:
    """Where dataset ``root`` is staged under ``stage_dir`` (environment variables expanded)."""
    base = os.path.expanduser(os.path.expandvars(stage_dir))
    if "$" in base or not os.path.isabs(base):
        raise UserError(f"data.stage_dir {stage_dir!r} is not an absolute path after expanding variables "
                        f"({base!r}); set it to a node-local folder such as /dev/shm or an exported $TMPDIR")
    digest = hashlib.sha256(manifest_text.encode()).hexdigest()[:12]
    return Path(base) / FOLDER / f"{Path(root).resolve().name}-{digest}"


def describe(r: NodeReport) -> str:
    """One line for the log: what was copied, at what rate, what was reused or linked."""
    rate = r.bytes / 2 ** 20 / r.seconds if r.seconds > 0 else 0.0
    n = r.counts
    parts = [f"copied {n['copied']} shard(s) ({r.bytes / 2 ** 20:.1f} MB) in {r.seconds:.2f} s ({rate:.0f} MB/s)"]
    if n["reused"]:
        parts.append(f"{n['reused']} already there")
    if n["replaced"]:
        parts.append(f"{n['replaced']} stale cop{'y' if n['replaced'] == 1 else 'ies'} replaced")
    parts.append("sha256 checked")
    if n["linked"]:
        parts.append(f"{n['linked']} shard(s) it does not read linked to the originals")
    return ", ".join(parts)


# ---------------------------------------------------------------- one node (its lowest rank)

def stage_node(root: Path, target: Path, manifest_text: str, reads: Reads, ranks: list) -> NodeReport:
    """Stage ``root`` into ``target`` for ``ranks`` (this node's); errors end up in the report."""
    report = NodeReport(socket.gethostname(), ranks)
    started = time.perf_counter()
    try:
        manifest = read_manifest(root)
        needed = needed_files(manifest, reads, ranks)
        _make_folder(target)
        _check_space(root, target, manifest, needed)
        for split in manifest["splits"].values():
            for entry in split["shards"]:
                _place(root / entry["file"], target / entry["file"], entry["sha256"], entry["file"] in needed, report)
        atomic_write_text(target / MANIFEST, manifest_text)
    except UserError as err:
        report.error = str(err)
    except OSError as err:
        report.error = (f"staging on node {report.host} failed: {err}; free space in data.stage_dir or set "
                        f"data.stage_dir='' to read the dataset where it is")
    report.seconds = time.perf_counter() - started
    return report


def needed_files(manifest: dict, reads: Reads, ranks: list) -> set[str]:
    """Names of the shards that hold a sample one of ``ranks`` reads."""
    names = set()
    for split, ranges in reads.items():
        shards = manifest["splits"][split]["shards"]
        bounds = np.concatenate([[0], np.cumsum([s["n"] for s in shards])])
        for rank in ranks:
            for start, stop in ranges(rank):
                if stop > start:
                    first = int(np.searchsorted(bounds, start, side="right") - 1)
                    last = int(np.searchsorted(bounds, stop, side="left") - 1)
                    names.update(shards[i]["file"] for i in range(first, last + 1))
    return names


def _make_folder(target: Path) -> None:
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the staging folder {target} on node {socket.gethostname()} ({err.strerror}); "
                        f"set data.stage_dir to a writable node-local folder") from None


def _check_space(root: Path, target: Path, manifest: dict, needed: set[str]) -> None:
    """A UserError before copying anything if the node's shards do not fit."""
    missing = sum((root / name).stat().st_size for name in needed
                  if not (target / name).is_file() or (target / name).is_symlink())
    free = shutil.disk_usage(target).free
    if missing > free:
        raise UserError(f"data.stage_dir {target.parent.parent} on node {socket.gethostname()} has "
                        f"{free / 2 ** 20:.0f} MB free but this node's shards need {missing / 2 ** 20:.0f} MB; "
                        f"use a larger node-local folder, or data.stage_dir='' to read the dataset where it is")


def _place(source: Path, dest: Path, digest: str, needed: bool, report: NodeReport) -> None:
    """Make ``dest`` a verified copy of ``source`` (``needed``) or, else, a link to it."""
    copy_there = dest.is_file() and not dest.is_symlink()
    if not needed:
        if not copy_there and not (dest.is_symlink() and os.readlink(dest) == str(source.resolve())):
            _link(source.resolve(), dest)
            report.counts["linked"] += 1
        return
    if copy_there and checksums.problem(dest, digest) is None:
        report.counts["reused"] += 1
        return
    report.counts["replaced"] += int(copy_there)
    _copy(source, dest, digest)
    report.counts["copied"] += 1
    report.bytes += dest.stat().st_size


def _copy(source: Path, dest: Path, digest: str) -> None:
    """Copy, check the copy's sha256, rename it into place; a mismatch is the source's fault."""
    with atomic_path(dest, suffix=".part") as tmp:
        shutil.copyfile(source, tmp)
        if sha256(tmp) != digest:
            raise UserError(f"shard {source} does not match its sha256 in the manifest (corrupted or replaced); "
                            f"regenerate the dataset")
    checksums.remember(dest, digest)  # the reader opening the copy next need not hash it again


def _link(source: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    os.symlink(source, tmp)
    os.replace(tmp, dest)
