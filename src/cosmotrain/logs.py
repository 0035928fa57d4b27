"""Rank-aware logging and progress bars.

Only rank 0 gets an INFO handler; other ranks print WARNING and above, prefixed with their
rank, so a 64-rank job's log reads like a single process's. Progress bars likewise exist on
rank 0 only; other ranks get a silent stand-in with the same methods.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Iterable

from cosmotrain import dist

LOGGER = "cosmotrain"


def setup(verbose: bool = False) -> logging.Logger:
    """Give the ``cosmotrain`` logger one stderr handler suited to this rank."""
    ctx = dist.context()
    log = logging.getLogger(LOGGER)
    log.handlers.clear()
    log.propagate = False
    handler = logging.StreamHandler(sys.stderr)
    prefix = f"[{ctx.rank}/{ctx.size}] " if ctx.size > 1 else ""
    handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(message)s", "%H:%M:%S"))
    level = logging.DEBUG if verbose else logging.INFO
    handler.setLevel(level if ctx.is_root else logging.WARNING)
    log.addHandler(handler)
    log.setLevel(level)
    return log


def get(name: str | None = None) -> logging.Logger:
    """The project logger, or a child of it (``get("train")`` → ``cosmotrain.train``)."""
    return logging.getLogger(f"{LOGGER}.{name}" if name else LOGGER)


class _Silent:
    """What non-root ranks get instead of a tqdm bar."""

    def __init__(self, iterable: Iterable | None = None, **_: Any):
        self._iterable = iterable

    def __iter__(self):
        return iter(self._iterable or ())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress(iterable: Iterable | None = None, **kwargs: Any):
    """A tqdm bar on rank 0 (to stderr), a silent stand-in elsewhere."""
    if not dist.context().is_root:
        return _Silent(iterable, **kwargs)
    from tqdm.auto import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 1.0)
    return tqdm(iterable, **kwargs)


def root_warning(logger: logging.Logger, message: str, *args: Any) -> None:
    """A warning that is the same on every rank, printed once (by rank 0)."""
    if dist.context().is_root:
        logger.warning(message, *args)


def result(line: str) -> None:
    """A command's result on stdout, printed once (by rank 0), flushed at once."""
    if dist.context().is_root:
        print(line, flush=True)
