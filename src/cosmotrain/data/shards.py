"""Sharded HDF5 datasets: writer, validating reader, per-rank epoch slicing.

On disk a dataset is a folder of ``{split}-{i:05d}-of-{n:05d}.h5`` files, each holding the
fields of its ``kind`` (see ``SCHEMAS``) chunked along N, plus ``manifest.json``: schema
version, counts and sha256 per file, the config and seed that made it, software versions.

Reading for training (``epoch_runs``): each epoch the dataset's blocks of ``block``
consecutive samples are shuffled with a seed shared by all ranks; the shuffled order is cut
into ``size`` equal parts, so rank r reads a disjoint part made of a few contiguous slabs,
and every rank gets exactly ``n // size`` samples (the remainder is dropped and reported).
Equal counts matter: a rank with one batch more would wait forever in an allreduce.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from cosmotrain.config import atomic_write_text
from cosmotrain.data import h5raw
from cosmotrain.errors import UserError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
CHUNK_BYTES = 256 * 1024  # a chunk holds a few samples: a 64x64x3 galaxy is 12 KiB
WINDOW_BYTES = 64 * 1024 * 1024  # one read window of rank_batches


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
        "attrs": _jsonable(attrs), "splits": entries, "config": _jsonable(config), "seed": seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": software_versions(), **(_jsonable(extra) if extra else {}),
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

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as h5:
            for name, array in fields.items():
                h5.create_dataset(name, data=array, chunks=_chunks(array) if len(array) else None)
            for key, value in attrs.items():
                h5.attrs[key] = value
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    schema = _schema(kind)
    if set(fields) != set(schema):
        raise UserError(f"{where}: fields {sorted(fields)} do not match the {kind} schema {sorted(schema)}")
    lengths = {len(v) for v in fields.values()}
    if len(lengths) != 1:
        raise UserError(f"{where}: fields have different lengths {sorted(lengths)}")
    for name, field in schema.items():
        _check_field(name, field, fields[name].dtype, fields[name].shape[1:], where)


def _check_field(name: str, field: Field, dtype, tail: tuple, where: str) -> None:
    if np.dtype(dtype) != np.dtype(field.dtype):
        raise UserError(f"{where}: '{name}' has dtype {dtype}, expected {field.dtype}; "
                        f"regenerate the dataset with this version of cosmotrain")
    if len(tail) != len(field.tail) or any(w is not None and w != t for w, t in zip(field.tail, tail)):
        raise UserError(f"{where}: '{name}' has sample shape {tuple(tail)}, expected {field.tail}")


def _schema(kind: str) -> dict[str, Field]:
    if kind not in SCHEMAS:
        raise UserError(f"unknown dataset kind '{kind}'; known: {', '.join(SCHEMAS)}")
    return SCHEMAS[kind]


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def software_versions() -> dict:
    """Versions of what made a file, for the manifest (no TensorFlow import)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("cosmotrain", "numpy", "h5py", "healpy", "tensorflow-cpu", "tensorflow", "horovod", "mpi4py"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------- reading

def read_manifest(root: str | os.PathLike) -> dict:
    """The manifest of the dataset in ``root``, schema-version checked."""
    path = Path(root) / MANIFEST
    if not Path(root).is_dir():
        raise UserError(f"dataset folder {root} does not exist; make it with 'cosmotrain data ...' first")
    if not path.is_file():
        raise UserError(f"{root} has no {MANIFEST}: not a cosmotrain dataset, or its writing was interrupted; "
                        f"regenerate it")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path} is not valid JSON; regenerate the dataset") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{root} has schema version {manifest.get('schema_version')}, this cosmotrain reads "
                        f"version {SCHEMA_VERSION}; regenerate the dataset")
    return manifest


class ShardSet:
    """One split of a dataset, validated on open; reads contiguous global ranges.

    HDF5 files are opened lazily, in the process that reads them (never before a fork).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", kind: str | None = None,
                 verify: bool = False):
        self.root = Path(root)
        self.manifest = read_manifest(root)
        self.kind = self.manifest["kind"]
        if kind is not None and self.kind != kind:
            raise UserError(f"{root} holds a '{self.kind}' dataset, this command needs '{kind}'")
        if split not in self.manifest["splits"]:
            raise UserError(f"{root} has no '{split}' split (it has: {', '.join(self.manifest['splits'])})")
        self.split = split
        self.schema = _schema(self.kind)
        entries = self.manifest["splits"][split]["shards"]
        self.files = [self.root / e["file"] for e in entries]
        self.counts = np.array([e["n"] for e in entries], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
        self.n = int(self.offsets[-1])
        self._handles: dict = {}
        self._datasets: dict = {}
        self._raw_fields: dict = {}
        self._fds: dict = {}
        self._pid = os.getpid()
        self._validate(entries, verify)

    @property
    def attrs(self) -> dict:
        return self.manifest["attrs"]

    def sample_shape(self, field: str) -> tuple:
        return tuple(self._open(0)[field].shape[1:]) if self.n else ()

    def _validate(self, entries: list, verify: bool) -> None:
        for path, entry in zip(self.files, entries):
            if not path.is_file():
                raise UserError(f"shard {path} is missing; regenerate the dataset or restore the file")
            if verify and sha256(path) != entry["sha256"]:
                raise UserError(f"shard {path} does not match its sha256 in the manifest (corrupted or "
                                f"replaced); regenerate the dataset")
        for i, path in enumerate(self.files):
            h5 = self._open(i)
            for name, field in self.schema.items():
                if name not in h5:
                    raise UserError(f"shard {path} lacks dataset '{name}'; regenerate the dataset")
                _check_field(name, field, h5[name].dtype, h5[name].shape[1:], f"shard {path}")
                if h5[name].shape[0] != self.counts[i]:
                    raise UserError(f"shard {path}: '{name}' holds {h5[name].shape[0]} samples, the manifest "
                                    f"says {self.counts[i]}; regenerate the dataset")

    def _open(self, i: int):
        import h5py

        if self._pid != os.getpid():  # forked: never share HDF5 handles across processes
            self._handles, self._datasets, self._fds, self._pid = {}, {}, {}, os.getpid()
        if i not in self._handles:
            try:
                self._handles[i] = h5py.File(self.files[i], "r")
            except OSError as err:
                raise UserError(f"cannot read HDF5 file {self.files[i]} ({err}); regenerate the dataset") from None
        return self._handles[i]

    def _raw(self, i: int, field: str) -> "h5raw.RawField | None":
        """Byte layout of ``field`` in shard ``i`` (None: read it through HDF5), found once."""
        if (i, field) not in self._raw_fields:
            self._raw_fields[i, field] = h5raw.RawField.of(self._open(i)[field], str(self.files[i]))
        return self._raw_fields[i, field]

    def _fd(self, i: int) -> int:
        self._open(i)  # resets the descriptors after a fork
        if i not in self._fds:
            self._fds[i] = os.open(self.files[i], os.O_RDONLY)
        return self._fds[i]

    def _dataset(self, i: int, field: str):
        """Low-level handle of ``field`` in shard ``i``, cached: the lookup costs more than a 64-sample read."""
        h5 = self._open(i)
        if (i, field) not in self._datasets:
            self._datasets[i, field] = h5[field].id
        return self._datasets[i, field]

    def read(self, start: int, stop: int, fields: tuple | None = None) -> dict[str, np.ndarray]:
        """Samples ``start:stop`` (global indices within the split) as {field: array}."""
        return self.read_runs([(start, stop)], fields)

    def read_runs(self, runs: list[tuple[int, int]], fields: tuple | None = None,
                  rows: np.ndarray | None = None, buffers: "Buffers | None" = None) -> dict[str, np.ndarray]:
        """Several contiguous ranges as {field: array}: their concatenation, or placed by ``rows``.

        ``rows`` (a permutation, one entry per sample of the concatenation) gives each
        sample's row in the output instead of its position. Plain datasets are read by
        byte offset straight into the rows (``h5raw``); others through HDF5. The arrays
        come from ``buffers`` when given, else are new.
        """
        fields = fields or tuple(self.schema)
        runs = [(max(0, a), min(self.n, b)) for a, b in runs if min(self.n, b) > max(0, a)]
        total = sum(b - a for a, b in runs)
        shapes = {f: ((total,) + self.sample_shape(f), np.dtype(self.schema[f].dtype)) for f in fields}
        arrays = buffers.take(shapes) if buffers else {f: np.empty(*shape) for f, shape in shapes.items()}
        views: dict = {}
        pos = 0
        for start, stop in runs:
            for i, lo, hi in self._pieces(start, stop):
                where = range(pos, pos + hi - lo) if rows is None else rows[pos:pos + hi - lo]
                for f in fields:
                    self._read_rows(i, f, lo, arrays[f], where, views)
                pos += hi - lo
        self._check_finite(arrays, runs, rows)
        return arrays

    def _read_rows(self, i: int, field: str, lo: int, out: np.ndarray, where: range | np.ndarray,
                   views: dict) -> None:
        """Samples ``lo, lo + 1, ...`` of ``field`` in shard ``i`` into rows ``where`` of ``out``.

        ``where`` is a ``range`` for consecutive rows, else an index array.
        """
        raw = self._raw(i, field)
        if raw is not None:
            if field not in views:
                views[field] = h5raw.row_views(out)
            raw.read(self._fd(i), lo, [views[field][r] for r in where])
        elif isinstance(where, range):
            self._read_hdf5(i, field, lo, out[where.start:where.stop])
        else:
            part = np.empty((len(where),) + out.shape[1:], dtype=out.dtype)
            self._read_hdf5(i, field, lo, part)
            out[where] = part

    def _pieces(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """(shard, local start, local stop) of the global range ``start:stop``."""
        first = int(np.searchsorted(self.offsets, start, side="right") - 1)
        for i in range(first, len(self.files)):
            lo, hi = max(start, self.offsets[i]), min(stop, self.offsets[i + 1])
            if self.offsets[i] >= stop:
                return
            if lo < hi:
                yield i, int(lo - self.offsets[i]), int(hi - self.offsets[i])

    def _read_hdf5(self, i: int, field: str, lo: int, dest: np.ndarray) -> None:
        """Samples ``lo:lo+len(dest)`` of ``field`` in shard ``i`` into the C-contiguous ``dest``."""
        import h5py

        dataset = self._dataset(i, field)
        space = dataset.get_space()
        space.select_hyperslab((lo,) + (0,) * (dest.ndim - 1), dest.shape)
        try:
            dataset.read(h5py.h5s.create_simple(dest.shape), space, dest)
        except OSError as err:
            raise UserError(f"cannot read '{field}' from {self.files[i]} ({err}); regenerate the dataset") from None

    def _check_finite(self, arrays: dict, runs: list[tuple[int, int]], rows: np.ndarray | None) -> None:
        for name, array in arrays.items():
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                pos = int(np.argwhere(~np.isfinite(array.reshape(len(array), -1)))[0, 0])
                pos = pos if rows is None else int(np.flatnonzero(rows == pos)[0])
                bad = np.concatenate([np.arange(a, b) for a, b in runs])[pos]
                raise UserError(f"{self.root}: '{name}' of sample {bad} in split {self.split} is NaN or inf; "
                                f"fix or regenerate the dataset")

    def close(self) -> None:
        self._datasets = {}
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        for h5 in self._handles.values():
            h5.close()
        self._handles = {}


# ---------------------------------------------------------------- per-rank epochs

def per_rank_count(n: int, size: int, where: str = "the dataset") -> int:
    """Samples each of ``size`` ranks gets from ``n``: equal for all, ``n // size``."""
    if n < size:
        raise UserError(f"{where} has {n} samples for {size} ranks; use at most {n} ranks or more data")
    return n // size


def epoch_runs(n: int, rank: int, size: int, seed: int, epoch: int, block: int = 64,
               shuffle: bool = True) -> list[tuple[int, int]]:
    """Contiguous ranges ``(start, stop)`` that rank ``rank`` reads in ``epoch``.

    Blocks of ``block`` samples are permuted with ``(seed, epoch)``, the same on every rank;
    the permuted order is cut into ``size`` equal parts of ``n // size`` samples. The parts
    are disjoint and together cover all but ``n % size`` samples.
    """
    m = per_rank_count(n, size)
    starts = np.arange(0, n, block)
    if shuffle:
        starts = starts[np.random.default_rng([seed, epoch]).permutation(len(starts))]
    lengths = np.minimum(starts + block, n) - starts
    ends = np.cumsum(lengths)  # position in the permuted order where each block ends
    lo, hi = rank * m, (rank + 1) * m
    runs = []
    for s, length, end in zip(starts, lengths, ends):
        begin = end - length
        a, b = max(lo, begin), min(hi, end)
        if a < b:
            runs.append((int(s + a - begin), int(s + b - begin)))
    return runs


def rank_batches(shards: ShardSet, rank: int, size: int, batch: int, seed: int, epoch: int,
                 fields: tuple | None = None, start_batch: int = 0, shuffle: bool = True,
                 window: int = 4096) -> Iterator[dict[str, np.ndarray]]:
    """This rank's batches for ``epoch``: equal count on every rank, deterministic order.

    Reads the rank's slabs a window at a time (at most ``window`` samples and
    ``WINDOW_BYTES``), so memory stays bounded on large datasets. Each sample is read
    straight into its batch (``dealt_rows``, keyed by seed, epoch and rank) and the
    window's batches come in a random order; a batch is a view of its window's arrays.
    ``start_batch`` skips batches already consumed (exact resume) without reading them.
    ``shuffle=False``: slabs and samples in order.
    """
    runs = epoch_runs(shards.n, rank, size, seed, epoch, shuffle=shuffle)
    m = sum(b - a for a, b in runs)
    steps = steps_per_epoch(m, batch, f"{shards.root} ({shards.split} split)")
    sample_bytes = sum(int(np.prod(shards.sample_shape(f), dtype=np.int64)) * np.dtype(shards.schema[f].dtype).itemsize
                       for f in (fields or shards.schema))
    window = max(batch, min(window, WINDOW_BYTES // max(1, sample_bytes)) // batch * batch)
    rng = np.random.default_rng([seed, epoch, rank, 7])
    buffers = Buffers()
    for w0 in range(0, steps * batch, window):
        count = (min(w0 + window, steps * batch) - w0) // batch
        order = rng.permutation(count) if shuffle else np.arange(count)
        rows = dealt_rows(count, batch, rng) if shuffle else None
        first = w0 // batch
        if first + count <= start_batch:
            continue
        data = shards.read_runs(_sub_runs(runs, w0, w0 + count * batch), fields, rows, buffers)
        for j in order[max(0, start_batch - first):]:
            yield {k: v[j * batch:(j + 1) * batch] for k, v in data.items()}


class Buffers:
    """Arrays for ``read_runs`` that are reused once nothing refers to them any more.

    A window's batches are views of its arrays; when every view is gone (the step used
    them), the arrays are filled again instead of allocating fresh memory, whose page
    faults cost as much as the read and vary with the kernel's huge-page luck.
    """

    def __init__(self):
        self._pool: list[dict[str, np.ndarray]] = []

    def take(self, shapes: dict) -> dict[str, np.ndarray]:
        """{field: array of shape/dtype ``shapes[field]``}, from a free set or new."""
        for arrays in self._pool:
            if all(sys.getrefcount(a) <= 3 for a in arrays.values()) and all(  # pool, loop, argument
                    f in arrays and arrays[f].dtype == dtype and arrays[f].shape[1:] == shape[1:]
                    and len(arrays[f]) >= shape[0] for f, (shape, dtype) in shapes.items()):
                return {f: arrays[f][:shape[0]] for f, (shape, _) in shapes.items()}
        arrays = {f: np.empty(shape, dtype) for f, (shape, dtype) in shapes.items()}
        self._pool.append(arrays)
        return arrays


def dealt_rows(batches: int, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Row of each reading position in a window of ``batches x batch`` samples.

    The positions form ``batch`` strips of ``batches`` consecutive samples; strip s is
    dealt one sample to every batch, starting at a random batch. Batch j (rows
    ``j*batch ... (j+1)*batch - 1``) so holds one sample of every strip, from a random
    place in it: neighbours on disk never share a batch.
    """
    position = np.arange(batches * batch)
    strip = position // batches
    shift = rng.integers(0, batches, batch)
    return ((position + shift[strip]) % batches) * batch + strip


def steps_per_epoch(per_rank: int, batch: int, where: str) -> int:
    """Full batches per epoch on each rank; a batch larger than the slice is an error."""
    if batch > per_rank:
        raise UserError(f"per-rank batch {batch} is larger than this rank's {per_rank} samples of {where}; "
                        f"lower the batch size or use fewer ranks")
    return per_rank // batch


def _sub_runs(runs: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The part of ``runs`` between positions ``lo`` and ``hi`` of their concatenation."""
    out, pos = [], 0
    for a, b in runs:
        s, e = max(lo, pos), min(hi, pos + b - a)
        if s < e:
            out.append((a + s - pos, a + e - pos))
        pos += b - a
    return out


def d4_transform(images: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Apply D4 element ``k[i]`` (0..7: rotation by 90°·(k mod 4), then a flip if k ≥ 4).

    ``images`` is [N,H,W,...] with H == W; returns a new array of the same shape/dtype.
    """
    out = np.empty_like(images)
    for g in range(8):
        sel = np.flatnonzero(k == g)
        if len(sel):
            t = np.rot90(images[sel], g % 4, axes=(1, 2))
            out[sel] = t[:, :, ::-1] if g >= 4 else t
    return out
