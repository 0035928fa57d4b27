"""Large sample sets across MPI ranks: per-rank HDF5 parts, exact resume, one virtual dataset.

A sample set is one folder of per-rank parts, a virtual ``samples.h5`` over them and a
manifest written last (its layout: ``sampleplan``).

The engine is model-agnostic: ``produce`` takes a ``compute(start, stop)`` function that
returns the fields of global samples ``start:stop``: ``gan_compute`` makes one from a
generator and counter-based latents, ``predict_classifier`` one from a classifier.

Reproducibility. Samples are computed in global batches ``[k·batch, (k+1)·batch)``, whatever
the rank count, so every batch a model sees has the same composition in every run; with
inputs that depend on the sample index only (a GAN's latents, ``models.latents``),
the values are the same bits with 1, 2 or 64 ranks, and after any number of kills and reruns.

Layout. The first run cuts the N samples into one part per rank, each a contiguous range of
whole batches, and records the cut in ``layout.json``. A rerun keeps that cut whatever its
own rank count: parts are dealt to the ranks it has (several parts to one rank, or idle
ranks), so a job requeued on a different allocation still finishes the same files
(``sampleplan`` decides what a run does).

Crash safety. A part is created whole (temporary file, then rename) with its datasets
contiguous and allocated at creation; HDF5 never opens it for writing again. Samples are
written with ``pwrite`` at the dataset's byte offset, so a kill at any moment cannot damage
the file's metadata. Every few seconds the written bytes are flushed to disk (fdatasync)
and only then are their batches marked in the part's ``done`` dataset; a rerun recomputes
exactly the batches not marked. A full disk is an error naming the fix; the rerun resumes.
"""
from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from cosmotrain import dist, logs, sampleplan
from cosmotrain.errors import UserError
from cosmotrain.files import sha256, software_versions
from cosmotrain.models.latents import latents
from cosmotrain.sampleplan import MANIFEST, SAMPLES, SCHEMA_VERSION, Spec, disk_errors, part_name, plain, write_text

COMMIT_SECONDS = 2.0  # how often written batches are flushed to disk and marked done
REPORT_SECONDS = 0.5  # how often a rank tells rank 0 how far it got

# compute(start, stop) -> {field: array [stop-start, ...]} for global samples start:stop
Compute = Callable[[int, int], Mapping[str, np.ndarray]]


# ---------------------------------------------------------------- batches and parts

def gan_compute(generator: Callable[[np.ndarray], np.ndarray], latent_dim: int, seed: int,
                field: str = "patches") -> Compute:
    """A ``compute`` for ``produce``: samples ``start:stop`` = generator(latents(seed, start:stop))."""
    def compute(start: int, stop: int) -> dict:
        patches = np.asarray(generator(latents(seed, start, stop, latent_dim)), dtype=np.float32)
        return {field: require_finite(patches, start)}
    return compute


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
    plan = dist.root_computes(sampleplan.plan, out, spec, ctx.size, overwrite)
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
        with disk_errors(path), h5py.File(tmp, "w") as h5:
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
        with disk_errors(self.path):
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
        with disk_errors(self.path):
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
        **plain(dict(extra)), "versions": software_versions(), "timing": timing,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_text(out, MANIFEST, json.dumps(manifest, indent=1))
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
        with disk_errors(out / SAMPLES), h5py.File(tmp, "w") as h5:
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


# ---------------------------------------------------------------- the commands' checks and last line

def check_counts(n: int, batch: int, seed: int) -> None:
    """Refuse bad numbers before anything is loaded (every rank sees the same answer)."""
    if n <= 0:
        raise UserError(f"--n {n}: the number of samples must be positive; pass --n N with N >= 1")
    if batch <= 0:
        raise UserError(f"--batch {batch}: the batch size must be positive; pass --batch B with B >= 1")
    if not 0 <= seed < 2**63:
        raise UserError(f"--seed {seed}: the seed must be an integer in [0, 2^63); pass --seed S")


def report(out: str, manifest: dict, noun: str) -> None:
    """The command's last stdout line (rank 0): where the set is and how fast this run made it."""
    timing = manifest["timing"]
    made = (f"{timing['produced']} made now at {timing['samples_per_second']:.0f}/s on {timing['ranks']} rank(s)"
            if timing["produced"] else "already complete, nothing to do")
    logs.result(f"{manifest['n']} {noun} in {Path(out) / manifest['samples']} ({made}); "
                f"manifest: {Path(out) / 'manifest.json'}")
