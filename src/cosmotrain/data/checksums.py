"""Shard checksums: checked against the manifest, and remembered while a file stays unchanged.

Hashing a dataset costs a full read of it; doing that every time a dataset is opened would
double the cost of a short job. So a file whose sha256 was found right is remembered in a
small cache entry keyed by its path, holding its size, modification time (ns), inode and
change time: while all four are unchanged, the file is the one that was verified and is
not read again. An edit in place changes the modification time (and the change time, which
no user can set back), a replaced file its inode, a truncated one its size.

The cache lives in ``$COSMOTRAIN_CACHE/verified`` (default ``$XDG_CACHE_HOME/cosmotrain``, else
``~/.cache/cosmotrain``), one JSON file per shard; a cache that cannot be written is skipped
(every open then hashes again). The dataset writer fills it as it writes, so a new dataset
is never hashed twice.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cosmotrain.files import atomic_write_text, sha256


def cache_dir() -> Path:
    """Where the verified-and-unchanged entries are kept."""
    root = os.environ.get("COSMOTRAIN_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or
                                                        Path.home() / ".cache") / "cosmotrain"
    return Path(root) / "verified"


def _entry(path: Path) -> Path:
    return cache_dir() / (hashlib.sha256(str(path.absolute()).encode()).hexdigest()[:32] + ".json")


def _fingerprint(path: Path) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def remember(path: str | os.PathLike, digest: str) -> None:
    """Note that the file at ``path``, as it is now, has sha256 ``digest`` (best effort)."""
    path = Path(path)
    try:
        atomic_write_text(_entry(path), json.dumps({"path": str(path.absolute()), "sha256": digest,
                                                    **_fingerprint(path)}))
    except OSError:
        pass  # no cache (read-only home, full disk): the next open hashes again


def known_good(path: str | os.PathLike, digest: str) -> bool:
    """True when ``path`` was found to have sha256 ``digest`` and has not changed since."""
    path = Path(path)
    try:
        entry = json.loads(_entry(path).read_text())
        return entry.get("sha256") == digest and entry.get("path") == str(path.absolute()) and \
            all(entry.get(k) == v for k, v in _fingerprint(path).items())
    except (OSError, ValueError):
        return False


def size_problem(path: Path, size: int | None) -> str | None:
    """Why ``path`` is not there with ``size`` bytes (None: unknown size, not checked), or None."""
    if not path.is_file():
        return f"shard {path} is missing; restore it or regenerate the dataset"
    actual = path.stat().st_size
    if size is not None and actual != size:
        return (f"shard {path} is {actual} bytes, the manifest says {size} (truncated or replaced); "
                f"restore it or regenerate the dataset")
    return None


def problem(path: str | os.PathLike, digest: str, size: int | None = None, cached: bool = True) -> str | None:
    """Why the shard at ``path`` is not the one the manifest describes (sha256 ``digest``, ``size``
    bytes when known), as one line naming the file and the fix; None when it is.

    ``cached``: a file verified before and unchanged since is not read again.
    """
    path = Path(path)
    missing = size_problem(path, size)
    if missing:
        return missing
    if cached and known_good(path, digest):
        return None
    if sha256(path) != digest:
        return (f"shard {path} does not match its sha256 in the manifest (edited, damaged or replaced); "
                f"restore it or regenerate the dataset")
    remember(path, digest)
    return None
