"""Writing files so that a reader never sees half of one, and describing what made them.

Every file cosmotrain writes goes through a temporary name beside its target and a rename
(``atomic_path``), so a kill at any moment leaves either the old file or the new one. Files
get the mode the user's umask gives a new file (0644 under the usual 022), so collaborators
can read them; ``tempfile.mkstemp`` alone would leave 0600.

Which rank writes is not decided here: see ``rundir.RootWriter``.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from cosmotrain.errors import StorageError

PACKAGES = ("cosmotrain", "numpy", "h5py", "healpy", "tensorflow-cpu", "tensorflow", "horovod", "mpi4py")

# The names of the temporary files ``atomic_path`` makes (what a killed writer can leave behind).
TEMPORARY = ".*.tmp*"

# What each storage failure means to a user; the libraries' messages carry the same strerror text.
STORAGE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                  errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                  errno.EPERM: "operation not permitted"}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` if the block succeeds.

    The folder is created if needed. On an exception the temporary file is removed and
    ``path`` is left as it was. The temporary is named ``.NAME.XXXX.tmp[suffix]``, so what a
    kill leaves behind is recognisable (``TEMPORARY``); ``suffix`` keeps an extension (``.png``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix.startswith(".tmp") else f".tmp{suffix}"  # every temporary is .*.tmp*
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


def save_image(pixels, path: str | os.PathLike) -> None:
    """Save a uint8 array [H, W, 3] as a PNG file, atomically."""
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


# ---------------------------------------------------------------- storage problems

def storage_problem(err: BaseException) -> str | None:
    """A few words for a full disk, exceeded quota, read-only file system or missing permission
    behind ``err`` (an OSError, or an h5py/TensorFlow error quoting one); None for anything else."""
    number = getattr(err, "errno", None)
    if number in STORAGE_ERRNOS:
        return STORAGE_ERRNOS[number]
    text = str(err)
    for number, words in STORAGE_ERRNOS.items():
        if os.strerror(number) in text:
            return words
    return None


@contextlib.contextmanager
def storage_errors(path: str | os.PathLike, fix: str) -> Iterator[None]:
    """Turn a storage failure while writing ``path`` into a one-line ``StorageError`` ending in ``fix``."""
    try:
        yield
    except StorageError:
        raise
    except Exception as err:
        problem = storage_problem(err)
        if problem is None:
            raise
        raise StorageError(f"cannot write {path}: {problem}; {fix}") from None


def existing_ancestor(path: str | os.PathLike) -> Path:
    """``path`` itself if it exists, else its nearest existing parent (absolute)."""
    found = Path(path).absolute()
    while not found.exists() and found != found.parent:
        found = found.parent
    return found


def writable_problem(path: str | os.PathLike) -> str | None:
    """Why the folder ``path`` (or, if it does not exist yet, its nearest existing parent) cannot
    be written to, as words for a message; None when a file can be created there.

    It is tried (a file is created and removed): permission bits say nothing to root, on a
    read-only mount, or under an ACL.
    """
    folder = existing_ancestor(path)
    try:
        fd, name = tempfile.mkstemp(prefix=".cosmotrain-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        return f"{folder} is not writable ({storage_problem(err) or err.strerror})"
    return None


def space_problem(path: str | os.PathLike, needed: int, what: str) -> str | None:
    """Words naming the shortfall when the file system of ``path`` has fewer than ``needed`` bytes free."""
    folder = existing_ancestor(path)
    free = shutil.disk_usage(folder).free
    if needed <= free:
        return None
    return f"{what} needs about {human_bytes(needed)} but the disk of {folder} has {human_bytes(free)} free"


def human_bytes(count: float) -> str:
    """``count`` bytes as '512 KB', '3.2 MB', '1.5 GB' (powers of 1000, as df -H shows them)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:.3g} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1000
    return f"{count:.4g} TB"


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
