"""Sharded HDF5 datasets on disk: the schema of each kind, and the writer.

A dataset is a folder of ``{split}-{i:05d}-of-{n:05d}.h5`` files, each holding the fields of
its ``kind`` (see ``SCHEMAS``) chunked along N, plus ``manifest.json``: schema version,
counts, bytes and sha256 per file, the config and seed that made it, software versions.
``reader.ShardSet`` reads and validates such a folder.

A dataset is written as a whole (``write_dataset``): into a hidden folder beside the target
(``.NAME.staging-HOST-PID``), which is renamed into place once every file and the manifest
are in it. A dataset the target held before stays readable until that moment and is then
deleted; a kill at any point leaves either the old dataset or the new one, never a mix,
and the next ``claim_output`` on that target removes what the kill left. Commands call
``claim_output`` first (before any work: the folder may be used, is writable, has room),
then ``write_dataset``.
"""
from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from cosmotrain import dist, logs
from cosmotrain.data import checksums
from cosmotrain.errors import StorageError, UserError
from cosmotrain.files import (TEMPORARY, atomic_path, atomic_write_text, plain_json, sha256, software_versions,
                              space_problem, storage_errors, writable_problem)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
CHUNK_BYTES = 256 * 1024  # a chunk holds a few samples: a 64x64x3 galaxy is 12 KiB
SHARDS = "*-of-*.h5"
STAGING, REPLACED = ".staging-", ".replaced-"  # .NAME.staging-*: being written; .NAME.replaced-*: on its way out
OVERHEAD_BYTES = 4 << 20  # HDF5 metadata, the manifest and pictures, on top of the arrays

log = logs.get("data")


@dataclasses.dataclass(frozen=True)
class Field:
    """One HDF5 dataset of a kind: dtype, the shape of one sample (None = any size), and the
    closed range its values must lie in (None: any finite value for floats, anything for ints)."""

    dtype: str
    tail: tuple
    bounds: tuple | None = None


SCHEMAS: dict[str, dict[str, Field]] = {
    "galaxies": {
        "images": Field("uint8", (None, None, 3)),
        "labels": Field("int8", (), (-1, 2)),  # -1: no class reached the vote threshold (votes only)
        "vote_fractions": Field("float32", (3,), (0.0, 1.0)),
        "ids": Field("int64", ()),
    },
    "cmb": {
        "patches": Field("float32", (None, None)),
        "centers": Field("float64", (2,)),
        "sky": Field("int32", ()),  # the simulated sky each patch was cut from (one split per sky)
    },
}
MAKERS = {"galaxies": "cosmotrain data galaxies", "cmb": "cosmotrain data cmb"}  # named in messages


def shard_name(split: str, i: int, n: int) -> str:
    return f"{split}-{i:05d}-of-{n:05d}.h5"


# ---------------------------------------------------------------- claiming the output folder

def claim_output(out_dir: str | os.PathLike, overwrite: bool, needed_bytes: int = 0) -> Path:
    """Check, before any work, that ``out_dir`` may receive a new dataset; returns it as a Path.

    What a killed write left beside or inside ``out_dir`` is cleaned up first (rank 0). Then an
    existing non-empty folder is refused unless ``overwrite`` (its files stay untouched until
    the new dataset is complete), and the folder that will hold it must be writable and have
    ``needed_bytes`` free (an estimate of the dataset's size; 0: not checked here). Every
    refusal is a one-line ``UserError``.
    """
    out = real_folder(out_dir)
    if dist.context().is_root:
        tidy(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} is a file; choose a folder path for --out")
    if out.is_dir() and out.stat().st_dev != out.parent.stat().st_dev:
        raise UserError(f"output {out} is a mount point, and a dataset is renamed into place from beside it; "
                        f"pass a folder inside it as --out")
    if out.is_dir() and _visible(out) and not overwrite:
        what = "a dataset" if (out / MANIFEST).exists() else "files"
        raise UserError(f"output folder {out} already holds {what}; pick a new --out or pass --overwrite")
    problem = writable_problem(out.absolute().parent) or (out.is_dir() and writable_problem(out))
    if problem:
        raise StorageError(f"cannot write the dataset {out}: {problem}; choose a writable --out (the dataset "
                           f"is written beside it and renamed into place)")
    short = space_problem(out.absolute().parent, needed_bytes, f"the dataset {out}")
    if short:
        raise StorageError(f"{short}; free space or choose another --out"
                           f"{' (an old dataset there stays until the new one is complete)' if overwrite else ''}")
    return out


def real_folder(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as a Path; a symbolic link is followed, so the dataset replaces its target, not the link."""
    out = Path(out_dir)
    return out.resolve() if out.is_symlink() else out


def tidy(out: Path) -> None:
    """Remove what a killed ``write_dataset`` left: staging folders, temporaries inside ``out``,
    and a dataset moved aside for a replacement that never came (it is moved back)."""
    parent, name = out.absolute().parent, glob.escape(out.name)
    for staging in parent.glob(f".{name}{STAGING}*"):
        shutil.rmtree(staging, ignore_errors=True)
    for old in parent.glob(f".{name}{REPLACED}*"):
        if not out.exists():
            os.rename(old, out)  # killed between the two renames of the commit: the old dataset stays
            log.warning("restored %s, which an interrupted write had moved aside", out)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for leftover in out.glob(TEMPORARY) if out.is_dir() else ():
        if leftover.is_file():
            leftover.unlink()


def _visible(out: Path) -> list[Path]:
    """What ``out`` holds besides temporaries a killed writer left."""
    leftovers = set(out.glob(TEMPORARY))
    return [p for p in out.iterdir() if p not in leftovers]


# ---------------------------------------------------------------- writing

def write_dataset(out_dir: str | os.PathLike, kind: str, splits: Mapping[str, Mapping[str, np.ndarray]],
                  attrs: Mapping, *, config: Mapping, seed: int, samples_per_shard: int = 4096,
                  extra: Mapping | None = None, also: Callable[[Path], None] | None = None) -> dict:
    """Write every split as shards plus ``manifest.json``, as a whole; returns the manifest.

    ``splits`` maps split name → {field: array with N first}; every array is checked against
    the schema of ``kind`` (dtypes, shapes, value ranges, finite floats) before anything is
    written. ``also(folder)`` may write companion files (a preview) into the new dataset
    before it is committed. Files of ``out_dir`` that are not part of a dataset (anything but
    shards and the manifest) are carried over into the new one unless it has its own. A full
    disk or a read-only folder is a one-line ``StorageError``; ``out_dir`` is then unchanged.
    """
    out = real_folder(out_dir)
    for split, fields in splits.items():
        check_fields(kind, fields, f"split {split}")
        check_values(kind, fields, f"split {split}")
    needed = sum(array.nbytes for fields in splits.values() for array in fields.values()) + OVERHEAD_BYTES
    short = space_problem(out.absolute().parent, needed, f"the dataset {out}")
    if short:
        raise StorageError(f"{short}; free space or choose another --out")
    staging = out.absolute().parent / f".{out.name}{STAGING}{socket.gethostname()}-{os.getpid()}"
    fix = "free space or choose a writable --out, then rerun; what the folder held before is unchanged"
    try:
        with storage_errors(out, fix):
            staging.mkdir(parents=True)
            manifest = _write_all(staging, kind, splits, attrs, config, seed, samples_per_shard, extra)
            if also is not None:
                also(staging)
            _carry_over(out, staging)
            atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=1))
            _commit(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only left on failure: a commit renames it away
    _remember(out, manifest)
    return manifest


def _write_all(folder: Path, kind: str, splits: Mapping, attrs: Mapping, config: Mapping, seed: int,
               per_shard: int, extra: Mapping | None) -> dict:
    """The shards of every split in ``folder``; returns the manifest (not yet written)."""
    entries = {split: _write_split(folder, split, fields, attrs, per_shard) for split, fields in splits.items()}
    return {
        "schema": f"cosmotrain/{kind}", "schema_version": SCHEMA_VERSION, "kind": kind,
        "attrs": plain_json(attrs), "splits": entries, "config": plain_json(config), "seed": seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": software_versions(), **(plain_json(extra) if extra else {}),
    }


def _write_split(out: Path, split: str, fields: Mapping[str, np.ndarray], attrs: Mapping, per_shard: int) -> dict:
    n = len(next(iter(fields.values())))
    n_files = max(1, -(-n // per_shard))
    bounds = np.linspace(0, n, n_files + 1).round().astype(int)
    shards = []
    for i in range(n_files):
        name = shard_name(split, i, n_files)
        part = {k: v[bounds[i]:bounds[i + 1]] for k, v in fields.items()}
        write_h5(out / name, part, attrs)
        shards.append({"file": name, "n": int(bounds[i + 1] - bounds[i]), "sha256": sha256(out / name),
                       "bytes": (out / name).stat().st_size})
    return {"n": n, "shards": shards}


def write_h5(path: Path, fields: Mapping[str, np.ndarray], attrs: Mapping) -> None:
    """One HDF5 file, datasets chunked along N, written atomically (temp + rename)."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for name, array in fields.items():
            h5.create_dataset(name, data=array, chunks=_chunks(array) if len(array) else None)
        for key, value in attrs.items():
            h5.attrs[key] = value


def _chunks(array: np.ndarray) -> tuple:
    row = max(1, array[:1].nbytes)
    rows = int(np.clip(CHUNK_BYTES // row, 1, len(array)))
    return (rows,) + array.shape[1:]


def _carry_over(out: Path, staging: Path) -> None:
    """Hard-link (or copy) into ``staging`` what ``out`` holds besides a dataset's own files,
    unless ``staging`` has its own; ``out`` itself is not changed."""
    if not out.is_dir():
        return
    ours = set(out.glob(SHARDS)) | set(out.glob(TEMPORARY)) | {out / MANIFEST}
    for entry in out.iterdir():
        target = staging / entry.name
        if entry in ours or entry.name.startswith(".") or target.exists():
            continue
        if entry.is_dir():
            shutil.copytree(entry, target, symlinks=True)
            continue
        try:
            os.link(entry, target)
        except OSError:
            shutil.copy2(entry, target)


def _commit(staging: Path, out: Path) -> None:
    """Put the complete dataset in ``staging`` at ``out``; an old one is moved aside, then deleted."""
    if not out.exists():
        os.rename(staging, out)
        return
    old = staging.with_name(staging.name.replace(STAGING, REPLACED, 1))
    os.rename(out, old)
    os.rename(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def _remember(out: Path, manifest: dict) -> None:
    """Record every shard just written as verified (its sha256 was computed from the written bytes)."""
    for entry in manifest["splits"].values():
        for shard in entry["shards"]:
            checksums.remember(out / shard["file"], shard["sha256"])


def check_fields(kind: str, fields: Mapping[str, np.ndarray], where: str) -> None:
    """Raise if ``fields`` do not match the schema of ``kind`` (names, dtypes, shapes, N)."""
    schema = schema_of(kind)
    if set(fields) != set(schema):
        raise UserError(f"{where}: fields {sorted(fields)} do not match the {kind} schema {sorted(schema)}")
    lengths = {len(v) for v in fields.values()}
    if len(lengths) != 1:
        raise UserError(f"{where}: fields have different lengths {sorted(lengths)}")
    for name, field in schema.items():
        check_field(name, field, fields[name].dtype, fields[name].shape[1:], where, kind)


def check_field(name: str, field: Field, dtype, tail: tuple, where: str, kind: str | None = None) -> None:
    """Raise if a field's ``dtype`` and sample shape ``tail`` do not fit ``field``.

    ``kind`` names the command that makes such datasets in the message.
    """
    remake = f"remake the dataset with '{MAKERS[kind]}'" if kind in MAKERS else "remake the dataset"
    if np.dtype(dtype) != np.dtype(field.dtype):
        raise UserError(f"{where}: '{name}' has dtype {dtype}, expected {field.dtype}; {remake}")
    if len(tail) != len(field.tail) or any(w is not None and w != t for w, t in zip(field.tail, tail)):
        expected = "x".join("any" if w is None else str(w) for w in field.tail) or "one value"
        hint = " (RGB: 3 channels; the ingest converts RGBA, CMYK and grey images to RGB)" if name == "images" \
            else ""
        raise UserError(f"{where}: '{name}' has sample shape {'x'.join(map(str, tail)) or 'one value'}, expected "
                        f"{expected}{hint}; {remake}")


def check_values(kind: str, fields: Mapping[str, np.ndarray], where: str) -> None:
    """Raise if a field holds a value outside its schema range, or a float that is NaN or inf."""
    schema = schema_of(kind)
    for name, array in fields.items():
        problem = value_problem(name, schema[name], np.asarray(array))
        if problem:
            raise UserError(f"{where}: {problem}")


def value_problem(name: str, field: Field, array: np.ndarray, first: int = 0, rows: int = 4096) -> str | None:
    """Words for the first value of ``array`` (samples ``first``, ...) outside ``field``'s range or
    not finite, naming the sample; None when every value fits. Checks ``rows`` samples at a time."""
    if array.dtype.kind != "f" and field.bounds is None:
        return None
    for start in range(0, len(array), rows):
        flat = np.asarray(array[start:start + rows]).reshape(-1, int(np.prod(array.shape[1:], dtype=np.int64)))
        bad = ~np.isfinite(flat) if flat.dtype.kind == "f" else np.zeros(flat.shape, bool)
        if field.bounds is not None:
            with np.errstate(invalid="ignore"):
                bad |= (flat < field.bounds[0]) | (flat > field.bounds[1])
        if bad.any():
            row = int(np.flatnonzero(bad.any(axis=1))[0])
            value = flat[row][bad[row]][0].item()
            allowed = f"in {field.bounds[0]}..{field.bounds[1]}" if field.bounds is not None else "finite"
            return f"'{name}' of sample {first + start + row} is {value!r}, not {allowed}"
    return None


def schema_of(kind: str) -> dict[str, Field]:
    """The fields of a dataset ``kind``; an unknown kind is a UserError."""
    if kind not in SCHEMAS:
        raise UserError(f"unknown dataset kind '{kind}'; known: {', '.join(SCHEMAS)}")
    return SCHEMAS[kind]


def split_counts(n: int, fractions: tuple[float, ...]) -> np.ndarray:
    """Sizes (int64 [K]) of consecutive parts of ``n`` items in ``fractions`` (summing to 1).

    Boundaries are rounded cumulative fractions, so the sizes always add up to ``n``.
    """
    bounds = np.rint(np.cumsum((0.0,) + tuple(fractions)) * n).astype(np.int64)
    bounds[-1] = n
    return np.diff(bounds)
