"""Large sample sets across MPI ranks: per-rank HDF5 parts, exact resume, one virtual dataset.

A sample set is one folder::

    DIR/layout.json        what the set is and how it is cut into parts (written first)
    DIR/part-00000.h5 ...  one contiguous range of samples per part
    DIR/samples.h5         HDF5 virtual datasets [N, ...] over the parts (written when all are done)
    DIR/manifest.json      sha256 per part, model checksum, config, seed, versions (written last:
                           a folder with a manifest is a complete set)

The engine is model-agnostic: ``produce`` takes a ``compute(start, stop)`` function that
returns the fields of global samples ``start:stop``. ``gan_compute`` makes one from a
generator and counter-based latents; ``predict classifier`` makes one from a classifier.

Reproducibility. Sample i's latent vector comes from NumPy's Philox keyed by the seed, with
its counter starting at i·2^64 (``latents``), so it depends on (seed, i) only. Samples are
computed in global batches ``[k·batch, (k+1)·batch)``, whatever the rank count, so every
batch a model sees has the same composition in every run: the values are the same bits
with 1, 2 or 64 ranks, and after any number of kills and reruns.

Layout. The first run cuts the N samples into one part per rank, each a contiguous range of
whole batches, and records the cut in ``layout.json``. A rerun keeps that cut whatever its
own rank count: parts are dealt to the ranks it has (several parts to one rank, or idle
ranks), so a job requeued on a different allocation still finishes the same files.

Crash safety. A part is created whole (temporary file, then rename) with its datasets
contiguous and allocated at creation; HDF5 never opens it for writing again. Samples are
written with ``pwrite`` at the dataset's byte offset, so a kill at any moment cannot damage
the file's metadata. Every few seconds the written bytes are flushed to disk (fdatasync)
and only then are their batches marked in the part's ``done`` dataset; a rerun recomputes
exactly the batches not marked. A full disk is an error naming the fix; the rerun resumes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from cosmotrain import dist, logs
from cosmotrain.config import atomic_write_text
from cosmotrain.data.shards import sha256, software_versions
from cosmotrain.errors import UserError

SCHEMA_VERSION = 1
LAYOUT, SAMPLES, MANIFEST = "layout.json", "samples.h5", "manifest.json"
VALIDATION = "validation"
COMMIT_SECONDS = 2.0  # how often written batches are flushed to disk and marked done
REPORT_SECONDS = 0.5  # how often a rank tells rank 0 how far it got

# How latent vectors are drawn (recorded in the spec: a change makes a different set).
LATENTS = "standard normal float32; NumPy Philox4x64 with key=seed, counter=i*2^64 for sample i"

# compute(start, stop) -> {field: array [stop-start, ...]} for global samples start:stop
Compute = Callable[[int, int], Mapping[str, np.ndarray]]


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
        return _plain({"kind": self.kind, "n": self.n, "batch": self.batch, "fields": self.fields,
                       "identity": self.identity})

    def row_bytes(self, field: str) -> int:
        dtype, tail = self.fields[field]
        return int(np.dtype(dtype).itemsize * np.prod(tail, dtype=np.int64))


def _plain(value):
    return json.loads(json.dumps(value))


# ---------------------------------------------------------------- latents and batches

def latents(seed: int, start: int, stop: int, dim: int) -> np.ndarray:
    """Standard-normal latent vectors of samples ``start:stop``: float32 [stop-start, dim].

    Row i is drawn from Philox4x64 with key ``seed`` and counter ``i·2^64``: it depends on
    (seed, i) only, never on the batch, the rank or the rank count.
    """
    out = np.empty((stop - start, dim), dtype=np.float32)
    for row, i in enumerate(range(start, stop)):
        bits = np.random.Philox(key=seed, counter=[0, i, 0, 0])
        out[row] = np.random.Generator(bits).standard_normal(dim)
    return out


def gan_compute(generator: Callable[[np.ndarray], np.ndarray], latent_dim: int, seed: int,
                field: str = "patches") -> Compute:
    """A ``compute`` for ``produce``: samples ``start:stop`` = generator(latents(seed, start:stop))."""
    def compute(start: int, stop: int) -> dict:
        patches = np.asarray(generator(latents(seed, start, stop, latent_dim)), dtype=np.float32)
        return {field: require_finite(patches, start)}
    return compute


def cut_parts(n: int, batch: int, size: int) -> list[tuple[int, int]]:
    """``size`` contiguous ranges of whole batches covering ``0:n`` (the last batch may be short)."""
    n_batches = -(-n // batch)
    if n_batches < size:
        raise UserError(f"{n} samples in batches of {batch} make {n_batches} batches for {size} ranks; "
                        f"use at most {n_batches} ranks or a smaller --batch")
    edges = [min(n, (p * n_batches // size) * batch) for p in range(size + 1)]
    return [(edges[p], edges[p + 1]) for p in range(size)]


# ---------------------------------------------------------------- producing a set

def produce(out_dir: str | os.PathLike, spec: Spec, compute: Compute, *, overwrite: bool = False,
            extra: Mapping | None = None, desc: str = "samples") -> dict:
    """Make the sample set ``spec`` in ``out_dir``, or finish it; every rank calls this.

    A folder holding the same spec is resumed (only missing batches are computed); a
    complete one is left untouched; any other non-empty folder is refused unless
    ``overwrite``. ``extra`` goes into the manifest (config, model paths). Returns the
    manifest, on every rank.
    """
    _check_spec(spec)
    ctx = dist.context()
    out = Path(out_dir)
    started = time.perf_counter()
    plan = dist.root_computes(_plan, out, spec, ctx.size, overwrite)
    if plan["complete"]:
        logs.get("sample").info("%s is already complete (%d samples); nothing to do", out, spec.n)
        return {**plan["manifest"], "timing": {"ranks": ctx.size, "produced": 0, "seconds": 0.0}}
    if ctx.size > len(plan["parts"]) and ctx.is_root:
        logs.get("sample").warning("resuming a %d-part set on %d ranks: %d ranks stay idle",
                                   len(plan["parts"]), ctx.size, ctx.size - len(plan["parts"]))
    progress = _Progress(spec.n, plan["done"], desc)
    hashes = {p: _make_part(out, spec, p, plan["parts"][p], plan["todo"][p], compute, progress)
              for p in plan["assignment"][ctx.rank]}
    progress.finish()
    computing = time.perf_counter() - started
    everything = dist.gather_object(hashes)
    manifest = None
    if ctx.is_root:
        hashes = {p: h for part in everything for p, h in part.items()}
        timing = {"ranks": ctx.size, "produced": spec.n - plan["done"], "seconds": computing}
        manifest = _finish(out, spec, plan["parts"], hashes, extra or {}, timing, started)
    return dist.broadcast_object(manifest)


def _check_spec(spec: Spec) -> None:
    if spec.n <= 0:
        raise UserError(f"the number of samples must be positive, got {spec.n}; pass --n N with N >= 1")
    if spec.batch <= 0:
        raise UserError(f"the batch size must be positive, got {spec.batch}; pass --batch B with B >= 1")


# ---------------------------------------------------------------- the plan (rank 0)

def _plan(out: Path, spec: Spec, size: int, overwrite: bool) -> dict:
    """Decide what this run does: fresh set, resume, nothing, or refuse."""
    layout = _claim(out, spec, overwrite)
    if layout is not None and (out / MANIFEST).is_file() and _parts_present(out, layout):
        return {"complete": True, "manifest": json.loads((out / MANIFEST).read_text())}
    parts = [tuple(p) for p in layout["parts"]] if layout else cut_parts(spec.n, spec.batch, size)
    todo = [_todo(out / part_name(p), spec, a, b) for p, (a, b) in enumerate(parts)]
    remaining = [sum(min(spec.batch, b - a - k * spec.batch) for k in t) for t, (a, b) in zip(todo, parts)]
    _check_space(out, spec, sum(remaining))
    if layout is None:
        _write(out, LAYOUT, json.dumps({"schema_version": SCHEMA_VERSION, "spec": spec.key(),
                                        "parts": parts, "ranks": size}, indent=1))
    else:
        for name in (MANIFEST, SAMPLES):  # a rerun after a kill during the last step
            (out / name).unlink(missing_ok=True)
    return {"complete": False, "parts": parts, "todo": todo, "done": spec.n - sum(remaining),
            "assignment": _assign(remaining, size)}


def _claim(out: Path, spec: Spec, overwrite: bool) -> dict | None:
    """The layout of the same set already in ``out``, or None for a fresh start."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} is a file; choose a folder path for --out")
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


def _check_space(out: Path, spec: Spec, samples: int) -> None:
    """Refuse to start when the disk cannot hold the samples still to be written."""
    need = samples * sum(spec.row_bytes(f) for f in spec.fields)
    probe = out if out.is_dir() else _existing_parent(out)
    free = shutil.disk_usage(probe).free
    if need > free:
        raise UserError(f"{out} needs {need / 1e9:.3g} GB for the samples still to write but its disk has "
                        f"{free / 1e9:.3g} GB free; free space or choose another --out, then rerun")


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _assign(remaining: list[int], size: int) -> list[list[int]]:
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


# ---------------------------------------------------------------- parts (every rank)

def _make_part(out: Path, spec: Spec, p: int, bounds: tuple, todo: list[int], compute: Compute,
               progress: "_Progress") -> str:
    """Compute and write the batches ``todo`` of part ``p``; returns the part's sha256."""
    path = out / part_name(p)
    write_part(path, spec, bounds, todo, compute, progress.add)
    return sha256(path)


def write_part(path: Path, spec: Spec, bounds: tuple, todo: list[int], compute: Compute,
               written: Callable[[int], None] = lambda n: None) -> None:
    """Compute batches ``todo`` (indices within the part) of the part at ``path`` holding
    global samples ``bounds = (start, stop)``, creating it if needed, and write them.

    On return they are on disk and marked done. ``written(n)`` is told of each batch.
    """
    start, stop = bounds
    if not path.is_file():
        _create_part(path, spec, start, stop)
    with _PartWriter(path, spec) as writer:
        for k in todo:
            a, b = start + k * spec.batch, min(start + (k + 1) * spec.batch, stop)
            writer.write(k, a, _checked(compute(a, b), spec, a, b))
            written(b - a)


def _create_part(path: Path, spec: Spec, start: int, stop: int) -> None:
    """An empty part: every field contiguous and allocated, ``done`` all zero; atomic."""
    import h5py

    n_batches = -(-(stop - start) // spec.batch)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with _disk_errors(path), h5py.File(tmp, "w") as h5:
            h5.attrs["start"], h5.attrs["stop"], h5.attrs["batch"] = start, stop, spec.batch
            for name, (dtype, tail) in spec.fields.items():
                dataset = _allocated(h5, name, (stop - start, *tail), dtype)
                for key, value in spec.attrs.get(name, {}).items():
                    dataset.attrs[key] = value
            h5.create_dataset("done", data=np.zeros(n_batches, dtype=np.uint8))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _allocated(h5, name: str, shape: tuple, dtype: str):
    """A contiguous dataset whose bytes are reserved in the file now (no fill values written)."""
    import h5py

    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_layout(h5py.h5d.CONTIGUOUS)
    plist.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    plist.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    plist.set_obj_track_times(False)  # no timestamps: the same samples give the same bytes
    space = h5py.h5s.create_simple(shape)
    kind = h5py.h5t.py_create(np.dtype(dtype).newbyteorder("<"))
    return h5py.Dataset(h5py.h5d.create(h5.id, name.encode(), kind, space, dcpl=plist))


def _checked(arrays: Mapping[str, np.ndarray], spec: Spec, start: int, stop: int) -> dict:
    """``arrays`` as contiguous little-endian arrays of the spec's dtypes and shapes."""
    out = {}
    for name, (dtype, tail) in spec.fields.items():
        array = np.ascontiguousarray(arrays[name], dtype=np.dtype(dtype).newbyteorder("<"))
        if array.shape != (stop - start, *tail):
            raise ValueError(f"compute returned '{name}' of shape {array.shape} for samples {start}:{stop}, "
                             f"expected {(stop - start, *tail)}")
        out[name] = array
    return out


def require_finite(array: np.ndarray, start: int) -> np.ndarray:
    """``array`` (model output for samples ``start:...``) if it holds no NaN or inf; else a UserError."""
    if not np.isfinite(array).all():
        bad = start + int(np.argwhere(~np.isfinite(array.reshape(len(array), -1)))[0, 0])
        raise UserError(f"the model produced NaN or inf for sample {bad}; its checkpoint is broken or "
                        f"diverged: use an earlier checkpoint (--checkpoint)")
    return array


@contextlib.contextmanager
def _disk_errors(path: Path):
    """Turn an OSError while writing ``path`` into a one-line UserError naming the fix."""
    try:
        yield
    except OSError as err:
        full = err.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(err)
        reason = "the disk is full (or the quota is exceeded)" if full else f"{err}"
        raise UserError(f"cannot write {path}: {reason}; free space or fix the folder, then rerun the "
                        f"same command to resume (finished batches are kept)") from None


class _PartWriter:
    """Writes batches into a part's reserved bytes; marks them done once they are on disk."""

    def __init__(self, path: Path, spec: Spec):
        import h5py

        with h5py.File(path, "r") as h5:
            self.offsets = {f: h5[f].id.get_offset() for f in spec.fields}
            self.done_offset = h5["done"].id.get_offset()
            self.start = int(h5.attrs["start"])
        self.row_bytes = {f: spec.row_bytes(f) for f in spec.fields}
        self.path = path
        self.fd = os.open(path, os.O_RDWR)
        self.pending: list[int] = []
        self.committed = time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        try:
            if err is None:
                self.commit()
        finally:
            os.close(self.fd)
        return False

    def write(self, k: int, start: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Write batch ``k`` of this part (global samples from ``start``)."""
        with _disk_errors(self.path):
            for name, array in arrays.items():
                offset = self.offsets[name] + (start - self.start) * self.row_bytes[name]
                _pwrite_all(self.fd, memoryview(array).cast("B"), offset)
        self.pending.append(k)
        if time.monotonic() - self.committed > COMMIT_SECONDS:
            self.commit()

    def commit(self) -> None:
        """Flush written batches to disk, then mark them done (never the other way round)."""
        if not self.pending:
            return
        with _disk_errors(self.path):
            os.fdatasync(self.fd)
            for k in self.pending:
                _pwrite_all(self.fd, b"\x01", self.done_offset + k)
            os.fdatasync(self.fd)
        self.pending.clear()
        self.committed = time.monotonic()


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while len(view):
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


# ---------------------------------------------------------------- progress (rank 0 counts all)

class _Progress:
    """Rank 0's bar counts every rank's samples; the others post their counts to it."""

    def __init__(self, total: int, done: int, desc: str):
        self.ctx = dist.context()
        self.unsent, self.sent_at, self.ended = 0, time.monotonic(), 0
        self.bar = logs.progress(total=total, initial=done, desc=desc, unit="sample", unit_scale=True,
                                 smoothing=0.1)

    def add(self, n: int) -> None:
        if self.ctx.is_root:
            self.bar.update(n)
            self._receive(block=False)
            return
        self.unsent += n
        if time.monotonic() - self.sent_at > REPORT_SECONDS:
            dist.send_to_root(("n", self.unsent))
            self.unsent, self.sent_at = 0, time.monotonic()

    def finish(self) -> None:
        """Non-root ranks post their last count; rank 0 waits until every rank has."""
        if not self.ctx.is_root:
            dist.send_to_root(("end", self.unsent))
            dist.complete_posts()
            return
        while self.ended < self.ctx.size - 1:
            self._receive(block=True)
        self.bar.close()

    def _receive(self, block: bool) -> None:
        for _, (what, n) in dist.receive_posted(block=block):
            self.bar.update(n)
            self.ended += what == "end"


# ---------------------------------------------------------------- the last step (rank 0)

def _finish(out: Path, spec: Spec, parts: list, hashes: dict, extra: Mapping, timing: dict,
            started: float) -> dict:
    """Write ``samples.h5`` (virtual datasets over the parts), then ``manifest.json``."""
    assembling = time.perf_counter()
    write_virtual(out, spec, parts)
    timing["assemble_seconds"] = time.perf_counter() - assembling
    timing["total_seconds"] = time.perf_counter() - started
    timing["samples_per_second"] = timing["produced"] / max(timing["seconds"], 1e-9)
    manifest = {
        "schema": "cosmotrain/samples", "schema_version": SCHEMA_VERSION, **spec.key(),
        "samples": SAMPLES,
        "parts": [{"file": part_name(p), "start": a, "stop": b, "sha256": hashes[p],
                   "bytes": (out / part_name(p)).stat().st_size} for p, (a, b) in enumerate(parts)],
        **_plain(dict(extra)), "versions": software_versions(), "timing": timing,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    _write(out, MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def write_virtual(out: Path, spec: Spec, parts: list) -> None:
    """``out/samples.h5``: one virtual dataset [N, ...] per field, mapping the parts in order.

    Part files are named relative to ``samples.h5``, so the folder can be moved. A missing
    part reads as NaN (floats) or -1 (integers), never as plausible zeros. No timestamps:
    the same set gives the same bytes.
    """
    import h5py

    tmp = out / f".{SAMPLES}.{os.getpid()}.tmp"
    try:
        with _disk_errors(out / SAMPLES), h5py.File(tmp, "w") as h5:
            h5.attrs["spec"] = json.dumps(spec.key(), sort_keys=True)
            for name, (dtype, tail) in spec.fields.items():
                dataset = _virtual(h5, name, np.dtype(dtype).newbyteorder("<"), (spec.n, *tail), parts)
                for key, value in spec.attrs.get(name, {}).items():
                    dataset.attrs[key] = value
        os.replace(tmp, out / SAMPLES)
    finally:
        tmp.unlink(missing_ok=True)


def _virtual(h5, name: str, dtype: np.dtype, shape: tuple, parts: list):
    """Virtual dataset ``name`` whose rows a:b are dataset ``name`` of part p, for each part."""
    import h5py

    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_obj_track_times(False)
    plist.set_fill_value(np.array([_missing(dtype)], dtype=dtype))
    for p, (a, b) in enumerate(parts):
        rows = h5py.h5s.create_simple(shape)
        rows.select_hyperslab((a,) + (0,) * (len(shape) - 1), (b - a,) + shape[1:])
        source = h5py.h5s.create_simple((b - a,) + shape[1:])
        plist.set_virtual(rows, part_name(p).encode(), name.encode(), source)
    space = h5py.h5s.create_simple(shape)
    kind = h5py.h5t.py_create(dtype)
    return h5py.Dataset(h5py.h5d.create(h5.id, name.encode(), kind, space, dcpl=plist))


def _missing(dtype) -> float | int:
    kind = np.dtype(dtype).kind
    return np.nan if kind == "f" else -1 if kind == "i" else 0


def _write(out: Path, name: str, text: str) -> None:
    with _disk_errors(out / name):
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
