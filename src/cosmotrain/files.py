"""Writing files so that a reader never sees half of one, and describing what made them.

Every file cosmotrain writes goes through a temporary name beside its target and a rename
(``atomic_path``), so a kill at any moment leaves either the old file or the new one. Files
get the mode the user's umask gives a new file (0644 under the usual 022), so collaborators
can read them; ``tempfile.mkstemp`` alone would leave 0600.

Which rank writes is not decided here: see ``rundir.RootWriter``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Iterator

PACKAGES = ("cosmotrain", "numpy", "h5py", "healpy", "tensorflow-cpu", "tensorflow", "horovod", "mpi4py")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` if the block succeeds.

    The folder is created if needed. On an exception the temporary file is removed and
    ``path`` is left as it was. ``suffix`` keeps an extension writers look at (``.png``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` would, for an instant, in every thread)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc (not Linux): the portable way
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """``data`` as indented JSON (one trailing newline), written atomically."""
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def save_figure(figure, path: str | os.PathLike, dpi: int = 110) -> None:
    """Save a matplotlib ``figure`` as PNG atomically, then close it (also on failure)."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, suffix=".png") as tmp:
            figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(figure)


def sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def software_versions() -> dict:
    """Versions of Python and of the packages that made a file, for manifests (no TensorFlow import)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out


def plain_json(value: Any) -> Any:
    """``value`` with NumPy arrays and scalars turned into lists and Python numbers, tuples into lists."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain_json(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value
