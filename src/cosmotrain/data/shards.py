"""Sharded HDF5 datasets on disk: the schema of each kind, and the writer.

A dataset is a folder of ``{split}-{i:05d}-of-{n:05d}.h5`` files, each holding the fields of
its ``kind`` (see ``SCHEMAS``) chunked along N, plus ``manifest.json``: schema version,
counts and sha256 per file, the config and seed that made it, software versions. The
manifest is written last, so a folder without one is incomplete. ``reader.ShardSet`` reads
and validates such a folder.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from cosmotrain.errors import UserError
from cosmotrain.files import atomic_path, atomic_write_text, plain_json, sha256, software_versions

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
CHUNK_BYTES = 256 * 1024  # a chunk holds a few samples: a 64x64x3 galaxy is 12 KiB


@dataclasses.dataclass(frozen=True)
class Field:
    """One HDF5 dataset of a kind: dtype and the shape of one sample (None = any size)."""

    dtype: str
    tail: tuple


SCHEMAS: dict[str, dict[str, Field]] = {
    "galaxies": {
        "images": Field("uint8", (None, None, 3)),
        "labels": Field("int8", ()),
        "vote_fractions": Field("float32", (3,)),
        "ids": Field("int64", ()),
    },
    "cmb": {
        "patches": Field("float32", (None, None)),
        "centers": Field("float64", (2,)),
        "sky": Field("int32", ()),  # the simulated sky each patch was cut from (one split per sky)
    },
}


def shard_name(split: str, i: int, n: int) -> str:
    return f"{split}-{i:05d}-of-{n:05d}.h5"


# ---------------------------------------------------------------- writing

def claim_output(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Check, before any work, that ``out_dir`` may receive a new dataset.

    An existing non-empty folder is refused unless ``overwrite``: its files stay untouched.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} is a file; choose a folder path for --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        what = "a dataset" if (out / MANIFEST).exists() else "files"
        raise UserError(f"output folder {out} already holds {what}; pick a new --out or pass --overwrite")
    return out


def write_dataset(out_dir: str | os.PathLike, kind: str, splits: Mapping[str, Mapping[str, np.ndarray]],
                  attrs: Mapping, *, config: Mapping, seed: int, samples_per_shard: int = 4096,
                  extra: Mapping | None = None) -> dict:
    """Write every split as shards plus ``manifest.json``; returns the manifest.

    ``splits`` maps split name → {field: array with N first}. Each file is written to a
    temporary name and renamed; the manifest comes last, so a folder without one is
    incomplete. Files of an older dataset in ``out_dir`` that are not rewritten are removed.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = {}
    for split, fields in splits.items():
        check_fields(kind, fields, f"split {split}")
        entries[split] = _write_split(out, split, fields, attrs, samples_per_shard)
    manifest = {
        "schema": f"cosmotrain/{kind}", "schema_version": SCHEMA_VERSION, "kind": kind,
        "attrs": plain_json(attrs), "splits": entries, "config": plain_json(config), "seed": seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": software_versions(), **(plain_json(extra) if extra else {}),
    }
    _remove_stale(out, manifest)
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def _write_split(out: Path, split: str, fields: Mapping[str, np.ndarray], attrs: Mapping, per_shard: int) -> dict:
    n = len(next(iter(fields.values())))
    n_files = max(1, -(-n // per_shard))
    bounds = np.linspace(0, n, n_files + 1).round().astype(int)
    shards = []
    for i in range(n_files):
        name = shard_name(split, i, n_files)
        part = {k: v[bounds[i]:bounds[i + 1]] for k, v in fields.items()}
        write_h5(out / name, part, attrs)
        shards.append({"file": name, "n": int(bounds[i + 1] - bounds[i]), "sha256": sha256(out / name)})
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


def _remove_stale(out: Path, manifest: dict) -> None:
    keep = {s["file"] for e in manifest["splits"].values() for s in e["shards"]}
    for old in out.glob("*-of-*.h5"):
        if old.name not in keep:
            old.unlink()


def check_fields(kind: str, fields: Mapping[str, np.ndarray], where: str) -> None:
    """Raise if ``fields`` do not match the schema of ``kind`` (names, dtypes, shapes, N)."""
    schema = schema_of(kind)
    if set(fields) != set(schema):
        raise UserError(f"{where}: fields {sorted(fields)} do not match the {kind} schema {sorted(schema)}")
    lengths = {len(v) for v in fields.values()}
    if len(lengths) != 1:
        raise UserError(f"{where}: fields have different lengths {sorted(lengths)}")
    for name, field in schema.items():
        check_field(name, field, fields[name].dtype, fields[name].shape[1:], where)


def check_field(name: str, field: Field, dtype, tail: tuple, where: str) -> None:
    """Raise if a field's ``dtype`` and sample shape ``tail`` do not fit ``field``."""
    if np.dtype(dtype) != np.dtype(field.dtype):
        raise UserError(f"{where}: '{name}' has dtype {dtype}, expected {field.dtype}; "
                        f"regenerate the dataset with this version of cosmotrain")
    if len(tail) != len(field.tail) or any(w is not None and w != t for w, t in zip(field.tail, tail)):
        raise UserError(f"{where}: '{name}' has sample shape {tuple(tail)}, expected {field.tail}")


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
