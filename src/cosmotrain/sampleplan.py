"""What a sample set is and what one run of its command does: a fresh layout, a resume, nothing, or a refusal.

A sample set is one folder::

    DIR/layout.json        what the set is and how it is cut into parts (written first)
    DIR/part-00000.h5 ...  one contiguous range of samples per part
    DIR/samples.h5         HDF5 virtual datasets [N, ...] over the parts (written when all are done)
    DIR/manifest.json      sha256 per part, model checksum, config, seed, versions (written last:
                           a folder with a manifest is a complete set)

``Spec`` is everything that determines a set's values: a folder holding the same spec is
resumed, a complete one left alone, any other refused unless ``--overwrite`` (``plan``, on
rank 0). The first run cuts the N samples into one part per rank, each a contiguous range of
whole batches (``cut_parts``); a rerun keeps that cut whatever its own rank count and deals
the parts to the ranks it has (``assign``). ``read_manifest`` and ``verify`` read a finished
set back. Writing the parts is ``sampleset``'s.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Mapping

import numpy as np

from cosmotrain import logs
from cosmotrain.errors import StorageError, UserError
from cosmotrain.files import atomic_write_text, sha256, space_problem, storage_errors, writable_problem

SCHEMA_VERSION = 1
LAYOUT, SAMPLES, MANIFEST = "layout.json", "samples.h5", "manifest.json"
VALIDATION = "validation"
SPARE_BYTES = 64 << 10  # samples.h5, the manifest and HDF5 metadata on top of the samples


def part_name(p: int) -> str:
    return f"part-{p:05d}.h5"


@dataclasses.dataclass(frozen=True)
class Spec:
    """Everything that determines a sample set's values: equal specs, identical sets.

    ``fields`` maps a dataset name to (dtype, shape of one sample), e.g.
    ``{"patches": ("float32", (64, 64))}``; ``identity`` holds the rest (model sha256, seed,
    ...); ``attrs`` maps a field to its HDF5 attributes (e.g. units).
    """

    kind: str
    n: int
    batch: int
    fields: Mapping[str, tuple]
    identity: Mapping
    attrs: Mapping[str, Mapping] = dataclasses.field(default_factory=dict)

    def key(self) -> dict:
        """The spec as plain JSON data, the form in which two runs are compared."""
        return plain({"kind": self.kind, "n": self.n, "batch": self.batch, "fields": self.fields,
                       "identity": self.identity})

    def row_bytes(self, field: str) -> int:
        dtype, tail = self.fields[field]
        return int(np.dtype(dtype).itemsize * np.prod(tail, dtype=np.int64))


def plain(value):
    return json.loads(json.dumps(value))


def cut_parts(n: int, batch: int, size: int) -> list[tuple[int, int]]:
    """``size`` contiguous ranges of whole batches covering ``0:n`` (the last batch may be short)."""
    n_batches = -(-n // batch)
    if n_batches < size:
        raise UserError(f"{n} samples in batches of {batch} make {n_batches} batches for {size} ranks; "
                        f"use at most {n_batches} ranks or a smaller --batch")
    edges = [min(n, (p * n_batches // size) * batch) for p in range(size + 1)]
    return [(edges[p], edges[p + 1]) for p in range(size)]


# ---------------------------------------------------------------- the plan (rank 0)

def plan(out: Path, spec: Spec, size: int, overwrite: bool) -> dict:
    """Decide what this run does: fresh set, resume, nothing, or refuse."""
    layout = _claim(out, spec, overwrite)
    if layout is not None and (out / MANIFEST).is_file() and _parts_present(out, layout):
        return {"complete": True, "manifest": json.loads((out / MANIFEST).read_text())}
    parts = [tuple(p) for p in layout["parts"]] if layout else cut_parts(spec.n, spec.batch, size)
    todo = [_todo(out / part_name(p), spec, a, b) for p, (a, b) in enumerate(parts)]
    remaining = [sum(min(spec.batch, b - a - k * spec.batch) for k in t) for t, (a, b) in zip(todo, parts)]
    _check_space(out, spec, parts)
    if layout is None:
        write_text(out, LAYOUT, json.dumps({"schema_version": SCHEMA_VERSION, "spec": spec.key(),
                                        "parts": parts, "ranks": size}, indent=1))
    else:
        for name in (MANIFEST, SAMPLES):  # a rerun after a kill during the last step
            (out / name).unlink(missing_ok=True)
    return {"complete": False, "parts": parts, "todo": todo, "done": spec.n - sum(remaining),
            "assignment": assign(remaining, size)}


def _claim(out: Path, spec: Spec, overwrite: bool) -> dict | None:
    """The layout of the same set already in ``out``, or None for a fresh start."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} is a file; choose a folder path for --out")
    unwritable = writable_problem(out)
    if unwritable:
        raise StorageError(f"cannot write the set {out}: {unwritable}; choose a writable --out")
    for leftover in _leftovers(out):
        leftover.unlink()
    if not out.is_dir() or not any(out.iterdir()):
        return None
    layout = _read_layout(out)
    if layout is not None and layout["spec"] == spec.key():
        return layout
    if not overwrite:
        what = _difference(layout["spec"], spec.key()) if layout else "files that are not a sample set"
        raise UserError(f"{out} already holds {what}; rerun the command that made it to resume, "
                        f"pick a new --out, or pass --overwrite")
    freed = sum(p.stat().st_blocks * 512 for p in [*out.glob("part-*.h5"), out / SAMPLES] if p.is_file())
    short = space_problem(out, spec.n * sum(spec.row_bytes(f) for f in spec.fields) + SPARE_BYTES - freed,
                          f"the sample set {out}")
    if short:
        raise StorageError(f"{short} (besides the set it replaces); free space or choose another --out")
    _clear(out)
    return None


def _leftovers(out: Path) -> list[Path]:
    """Temporary files of ours that a killed run left behind (a rename never happened)."""
    ours = (LAYOUT, MANIFEST, SAMPLES, "part-")
    return [p for p in out.glob(".*.tmp") if p.name[1:].startswith(ours)] if out.is_dir() else []


def _read_layout(out: Path) -> dict | None:
    try:
        layout = json.loads((out / LAYOUT).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return layout if layout.get("schema_version") == SCHEMA_VERSION else None


def _difference(old: dict, new: dict) -> str:
    """The first setting in which two specs differ, as words for an error message."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    for key in sorted(set(flat_old) | set(flat_new)):
        if flat_old.get(key) != flat_new.get(key):
            return f"a different sample set ({key} {flat_old.get(key)!r} there, {flat_new.get(key)!r} now)"
    return "a different sample set"


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _clear(out: Path) -> None:
    """Remove a sample set's files (manifest first, layout last); other files stay."""
    for name in (MANIFEST, SAMPLES):
        (out / name).unlink(missing_ok=True)
    for part in out.glob("part-*.h5"):
        part.unlink()
    shutil.rmtree(out / VALIDATION, ignore_errors=True)
    (out / LAYOUT).unlink(missing_ok=True)


def _parts_present(out: Path, layout: dict) -> bool:
    return all((out / part_name(p)).is_file() for p in range(len(layout["parts"])))


def _todo(path: Path, spec: Spec, start: int, stop: int) -> list[int]:
    """Batches of the part at ``path`` not yet marked done (all of them if it is missing)."""
    import h5py

    n_batches = -(-(stop - start) // spec.batch)
    if not path.is_file():
        return list(range(n_batches))
    try:
        with h5py.File(path, "r") as h5:
            _check_part(h5, spec, start, stop)
            done = h5["done"][:]
    except (OSError, KeyError, ValueError) as err:
        logs.get("sample").warning("%s is unreadable or foreign (%s); it will be made again", path, err)
        path.unlink()
        return list(range(n_batches))
    return [int(k) for k in np.flatnonzero(done == 0)]


def _check_part(h5, spec: Spec, start: int, stop: int) -> None:
    if int(h5.attrs["start"]) != start or int(h5.attrs["stop"]) != stop:
        raise ValueError("its range differs from the layout")
    for name, (dtype, tail) in spec.fields.items():
        if h5[name].shape != (stop - start, *tail) or h5[name].dtype != np.dtype(dtype):
            raise ValueError(f"'{name}' has the wrong shape or dtype")


def _check_space(out: Path, spec: Spec, parts: list[tuple[int, int]]) -> None:
    """Refuse to start when the disk cannot hold what is still to be written.

    A part that exists already has its size reserved but, on most file systems, only the
    blocks of the batches written so far allocated (the rest is a hole): what it still needs
    is its size minus its allocated blocks, whatever its batches' marks say.
    """
    need = SPARE_BYTES
    for p, (a, b) in enumerate(parts):
        path = out / part_name(p)
        if path.is_file():
            st = path.stat()
            need += max(0, st.st_size - 512 * st.st_blocks)
        else:
            need += (b - a) * sum(spec.row_bytes(f) for f in spec.fields)
    short = space_problem(out, need, f"the rest of the sample set {out}")
    if short:
        raise StorageError(f"{short}; free space or choose another --out, then rerun")


def assign(remaining: list[int], size: int) -> list[list[int]]:
    """Deal parts to ranks: part r to rank r when the rank count is unchanged, else
    the largest remaining part to the least loaded rank."""
    if len(remaining) == size:
        return [[p] for p in range(size)]
    load = [0] * size
    deal: list[list[int]] = [[] for _ in range(size)]
    for p in sorted(range(len(remaining)), key=lambda p: (-remaining[p], p)):
        r = min(range(size), key=lambda r: (load[r], r))
        deal[r].append(p)
        load[r] += remaining[p]
    return [sorted(d) for d in deal]


def disk_errors(path: Path):
    """A context in which a full disk or read-only folder while writing ``path`` is a one-line StorageError."""
    return storage_errors(path, "free space or fix the folder, then rerun the same command to resume (finished "
                                "batches are kept)")


def write_text(out: Path, name: str, text: str) -> None:
    """``out/name`` written atomically; a full disk is a one-line error."""
    with disk_errors(out / name):
        atomic_write_text(out / name, text)


# ---------------------------------------------------------------- reading back

def read_manifest(out_dir: str | os.PathLike) -> dict:
    """The manifest of the complete sample set in ``out_dir``."""
    out = Path(out_dir)
    path = out / MANIFEST
    if not path.is_file():
        hint = ("its production was interrupted: rerun the command that made it" if (out / LAYOUT).is_file()
                else "make one with 'cosmotrain sample gan' or 'cosmotrain predict classifier'")
        raise UserError(f"{out} is not a complete sample set (no {MANIFEST}); {hint}")
    manifest = json.loads(path.read_text())
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{out} has sample-set schema {manifest.get('schema_version')}, this cosmotrain reads "
                        f"{SCHEMA_VERSION}; make the set again")
    return manifest


def verify(out_dir: str | os.PathLike, rank: int = 0, size: int = 1) -> dict:
    """Check the sha256 of parts ``rank::size`` against the manifest; returns the manifest.

    Call it on every rank with its rank and the rank count to share the reading.
    """
    out = Path(out_dir)
    manifest = read_manifest(out)
    if not (out / SAMPLES).is_file():
        raise UserError(f"{out / SAMPLES} is missing; rerun the command that made the set")
    for part in manifest["parts"][rank::size]:
        path = out / part["file"]
        if not path.is_file():
            raise UserError(f"{path} is missing; restore it or rerun the command that made the set")
        if sha256(path) != part["sha256"]:
            raise UserError(f"{path} does not match its sha256 in the manifest (corrupted or replaced); "
                            f"delete it and rerun the command that made the set")
    return manifest
