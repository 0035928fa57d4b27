"""Reading a sharded dataset: the manifest, and ``ShardSet``, one split validated on open.

Opening a split checks, before any sample is read, that each shard is present with the
size the manifest gives, that its bytes match the manifest's sha256 (``checksums``: a
file verified before and unchanged since is not read again; under N ranks each rank hashes
every N-th file), and that its HDF5 datasets have the schema's dtypes, shapes and counts.
A problem is one ``UserError`` line naming the file.

``ShardSet`` reads contiguous global ranges of a split (``read``) or several at once,
scattered into rows (``read_runs``, what the training input uses). Plain datasets are read
by byte offset (``h5raw``); HDF5 files are opened lazily, in the process that reads them
(never before a fork).
"""
from __future__ import annotations

import copy
import json
import os
import sys
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from cosmotrain import dist
from cosmotrain.data import checksums, h5raw
from cosmotrain.data.shards import MANIFEST, SCHEMA_VERSION, check_field, schema_of, value_problem
from cosmotrain.errors import UserError


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


SCATTER_BYTES = 4096  # rows at least this long are read straight into their places


class ShardSet:
    """One split of a dataset, validated on open; reads contiguous global ranges.

    ``verify`` checks the shards' sha256 (through the cache of ``checksums``); False skips it
    (a dataset just written, benchmarks). ``shared``: every rank of the job opens the split
    together (a collective), each hashes its share of the shards and a problem any rank finds
    is raised on every rank; otherwise this process hashes them all. HDF5 files are opened
    lazily, in the process that reads them (never before a fork).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", kind: str | None = None,
                 verify: bool = True, shared: bool = False):
        self.root = Path(root)
        self.manifest = read_manifest(root)
        self.kind = self.manifest["kind"]
        if kind is not None and self.kind != kind:
            raise UserError(f"{root} holds a '{self.kind}' dataset, this command needs '{kind}'")
        if split not in self.manifest["splits"]:
            raise UserError(f"{root} has no '{split}' split (it has: {', '.join(self.manifest['splits'])})")
        self.split = split
        self.schema = schema_of(self.kind)
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
        self.buffers = Buffers()  # rank_batches' read windows, reused from epoch to epoch
        self._validate(entries, verify, shared)

    @property
    def attrs(self) -> dict:
        return self.manifest["attrs"]

    def head(self, n: int) -> "ShardSet":
        """The first ``n`` samples of this split as a set of their own (e.g. the kept galaxies).

        Same files and validation; its own lazily opened handles, so closing one leaves the other open.
        """
        view = copy.copy(self)
        view.n = min(int(n), self.n)
        view._handles, view._datasets, view._raw_fields, view._fds = {}, {}, {}, {}
        view.buffers = Buffers()
        return view

    def sample_shape(self, field: str) -> tuple:
        return tuple(self._open(0)[field].shape[1:]) if self.n else ()

    def sample_bytes(self, fields: tuple) -> int:
        """Bytes of one sample's ``fields``."""
        return sum(int(np.prod(self.sample_shape(f), dtype=np.int64)) * np.dtype(self.schema[f].dtype).itemsize
                   for f in fields)

    def _validate(self, entries: list, verify: bool, shared: bool) -> None:
        ctx = dist.context()
        share = shared and ctx.size > 1
        problem = None
        for k, (path, entry) in enumerate(zip(self.files, entries)):
            if verify and (not share or k % ctx.size == ctx.rank):
                problem = checksums.problem(path, entry["sha256"], entry.get("bytes"))
            else:
                problem = checksums.size_problem(path, entry.get("bytes"))
            if problem:
                break
        if share:  # the same first problem on every rank, so every rank stops with the same line
            problem = next((p for p in dist.allgather_object(problem) if p), None)
        if problem:
            raise UserError(problem)
        for i, path in enumerate(self.files):
            h5 = self._open(i)
            for name, field in self.schema.items():
                if name not in h5:
                    raise UserError(f"shard {path} lacks dataset '{name}'; regenerate the dataset")
                check_field(name, field, h5[name].dtype, h5[name].shape[1:], f"shard {path}", self.kind)
                if h5[name].shape[0] != self.counts[i]:
                    raise UserError(f"shard {path}: '{name}' holds {h5[name].shape[0]} samples, the manifest "
                                    f"says {self.counts[i]}; regenerate the dataset")

    def check_values(self, fields: tuple) -> None:
        """Read ``fields`` whole and raise a UserError at the first value outside the schema's range
        (a label outside -1..2, a NaN vote fraction), naming the file and sample."""
        for i, path in enumerate(self.files):
            for name in fields:
                problem = value_problem(name, self.schema[name], self._open(i)[name][:])
                if problem:
                    raise UserError(f"shard {path}: {problem}; remake the dataset or fix that value")

    def require_samples(self, what: str) -> None:
        """Raise a UserError when this split is empty; ``what`` says what it was going to be used for."""
        if self.n == 0:
            raise UserError(f"split '{self.split}' of {self.root} is empty, so there is nothing for {what}; remake "
                            f"the dataset with more samples or choose another split")

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

        ``where`` is a ``range`` for consecutive rows, else an index array. Rows of a page or
        more go by byte offset straight into place; smaller ones (labels, ids) are read
        together and placed by NumPy: one system-call segment per byte of a label cost the
        shuffled read a fifth of its time.
        """
        raw, consecutive = self._raw(i, field), isinstance(where, range)
        if raw is not None and not consecutive and raw.row_bytes >= SCATTER_BYTES:
            if field not in views:
                views[field] = h5raw.row_views(out)
            raw.read(self._fd(i), lo, list(map(views[field].__getitem__, where.tolist())))
            return
        dest = out[where.start:where.stop] if consecutive else np.empty((len(where),) + out.shape[1:], out.dtype)
        if raw is not None:
            raw.read_into(self._fd(i), lo, dest)
        else:
            self._read_hdf5(i, field, lo, dest)
        if not consecutive:
            out[where] = dest

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
        self.buffers = Buffers()


class Buffers:
    """Arrays for ``read_runs`` that are reused once nothing refers to them any more.

    A window's batches are views of its arrays; when every view is gone (the step used
    them), the arrays are filled again instead of allocating fresh memory, whose page
    faults cost as much as the read and vary with the kernel's huge-page luck. A split
    keeps one pool for all its epochs (``ShardSet.buffers``): one per epoch allocated the
    first windows of every epoch afresh, which cost ``bench pipeline`` 13 % of its reads.
    The arrays start on ``ALIGN``-byte boundaries, so that TensorFlow can use a batch's
    memory as it is (``feed.as_tensor``) instead of copying it.
    """

    def __init__(self):
        self._pool: list[dict[str, np.ndarray]] = []
        self._lock = threading.Lock()  # two reading threads never get the same free set

    def take(self, shapes: dict) -> dict[str, np.ndarray]:
        """{field: array of shape/dtype ``shapes[field]``}, from a free set or new."""
        with self._lock:
            return self._take(shapes)

    def _take(self, shapes: dict) -> dict[str, np.ndarray]:
        for arrays in self._pool:
            if all(_unused(a) for a in arrays.values()) and all(
                    f in arrays and arrays[f].dtype == dtype and arrays[f].shape[1:] == shape[1:]
                    and len(arrays[f]) >= shape[0] for f, (shape, dtype) in shapes.items()):
                return {f: arrays[f][:shape[0]] for f, (shape, _) in shapes.items()}
        arrays = {f: aligned_empty(shape, dtype) for f, (shape, dtype) in shapes.items()}
        self._pool.append(arrays)
        return arrays


ALIGN = 64  # bytes: TensorFlow's (Eigen's) largest alignment


def aligned_empty(shape: tuple, dtype, align: int = ALIGN) -> np.ndarray:
    """An uninitialised array whose data starts on an ``align``-byte boundary.

    A view into a slightly larger byte array, which owns the memory (``.base``): every
    further view of it refers to that owner.
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def _unused(array: np.ndarray) -> bool:
    """No view of an ``aligned_empty`` array's memory exists but the array itself."""
    return sys.getrefcount(array.base) <= 2  # the array, the argument
