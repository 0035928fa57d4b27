"""Reading samples of an uncompressed HDF5 dataset by byte offset, scattered into rows.

A shard's datasets are written without filters, chunked along N with whole samples per
chunk, so sample k of a chunk starting at byte B lies at ``B + k * row_bytes``. ``RawField``
finds those offsets once (HDF5's own chunk index) and reads with ``os.preadv``: one system
call per chunk touched, and the kernel copies every sample straight into its destination
row, wherever that row is. The training input deals samples to their batches this way,
with no copy between the page cache and the batch. ``RawField.of`` returns None for a
dataset it cannot read so (compressed, non-native byte order, partial chunks): the caller
then reads through HDF5.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from cosmotrain.errors import UserError

IOV_MAX = 1024  # iovecs per preadv call (Linux's limit)


@dataclasses.dataclass(frozen=True)
class RawField:
    """Byte layout of one dataset: ``offsets[c]`` is where chunk c (``chunk_rows`` samples) starts."""

    path: str
    row_bytes: int
    chunk_rows: int
    offsets: tuple

    @classmethod
    def of(cls, dataset, path: str) -> "RawField | None":
        """The layout of h5py ``dataset`` (a ``Dataset``), or None if it is not plain bytes on disk."""
        import h5py

        dsid, n = dataset.id, dataset.shape[0]
        plist = dsid.get_create_plist()
        if n == 0 or plist.get_nfilters() or not dataset.dtype.isnative:
            return None
        row_bytes = int(np.prod(dataset.shape[1:], dtype=np.int64)) * dataset.dtype.itemsize
        if plist.get_layout() == h5py.h5d.CONTIGUOUS:
            offset = dsid.get_offset()
            return None if offset is None else cls(path, row_bytes, n, (int(offset),))
        if plist.get_layout() != h5py.h5d.CHUNKED or tuple(plist.get_chunk()[1:]) != dataset.shape[1:]:
            return None
        rows = plist.get_chunk()[0]
        chunks = dict(_chunk_starts(dsid))
        starts = range(0, n, rows)
        if any(s not in chunks for s in starts):
            return None  # chunks never written: HDF5 knows their fill value, we do not
        return cls(path, row_bytes, rows, tuple(int(chunks[s]) for s in starts))

    def read(self, fd: int, lo: int, rows: list) -> None:
        """Samples ``lo``, ``lo + 1``, ... into ``rows``: one writable ``row_bytes`` buffer each (``row_views``)."""
        for done, n, offset in self._spans(lo, len(rows)):
            for k in range(0, n, IOV_MAX):
                part = rows[done + k:done + min(n, k + IOV_MAX)]
                self._preadv(fd, part, offset + k * self.row_bytes, len(part) * self.row_bytes)

    def read_into(self, fd: int, lo: int, dest: np.ndarray) -> None:
        """Samples ``lo``, ``lo + 1``, ... into the C-contiguous ``dest``, one system call per chunk."""
        flat = memoryview(dest.reshape(-1).view(np.uint8))
        for done, n, offset in self._spans(lo, len(dest)):
            self._preadv(fd, [flat[done * self.row_bytes:(done + n) * self.row_bytes]], offset, n * self.row_bytes)

    def _spans(self, lo: int, count: int):
        """(first row, rows, byte offset) of each chunk's part of samples ``lo`` … ``lo + count - 1``."""
        done = 0
        while done < count:
            first = lo + done
            chunk = first // self.chunk_rows
            n = min(lo + count, (chunk + 1) * self.chunk_rows) - first
            yield done, n, self.offsets[chunk] + (first - chunk * self.chunk_rows) * self.row_bytes
            done += n

    def _preadv(self, fd: int, buffers: list, offset: int, nbytes: int) -> None:
        if os.preadv(fd, buffers, offset) != nbytes:
            raise UserError(f"{self.path} ends early (truncated?); regenerate the dataset")


def _chunk_starts(dsid):
    """(first sample, byte offset) of every allocated chunk of a dataset."""
    for c in range(dsid.get_num_chunks()):
        info = dsid.get_chunk_info(c)
        yield info.chunk_offset[0], info.byte_offset


def row_views(array: np.ndarray) -> list[np.ndarray]:
    """One writable byte array per sample (first axis) of the C-contiguous ``array``, a view of it."""
    return list(array.reshape(len(array), -1).view(np.uint8)) if len(array) else []
