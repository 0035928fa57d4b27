"""Rank-aware logging and progress, made for terminals and for batch-job log files alike.

Every line starts with the date and time (``2026-12-04 13:33:01``), so the append-mode log
of a requeued job stays unambiguous, then ``[rank/size]`` under several ranks. Rank 0
prints INFO and above. Other ranks print errors, and only those warnings that differ per
rank (``rank_warning``): a warning that is the same everywhere appears once, from rank 0,
however many ranks the job has.

Progress: on rank 0, a tqdm bar when someone watches a terminal (this process's stderr, or
under ``mpirun`` the launcher's); otherwise, in a job's log file, one INFO line every
``COSMOTRAIN_PROGRESS_SECONDS`` (60) seconds, never a carriage return. The environment
variable ``COSMOTRAIN_PROGRESS`` overrides the choice: ``bar``, ``log`` or ``off``
(``auto``, the default, decides as above). Other ranks never show progress.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Iterable

from cosmotrain import dist
from cosmotrain.errors import UserError

LOGGER = "cosmotrain"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
PROGRESS_MODES = ("auto", "bar", "log", "off")
PROGRESS_SECONDS = 60.0  # default interval of the progress lines in a log file


def setup(verbose: bool = False) -> logging.Logger:
    """Give the ``cosmotrain`` logger one stderr handler suited to this rank.

    Also checks the progress settings of the environment, so a typo there fails at once
    (``UserError``) rather than at the first progress bar.
    """
    progress_settings()
    ctx = dist.context()
    log = logging.getLogger(LOGGER)
    log.handlers.clear()
    log.propagate = False
    handler = _BarAwareHandler(sys.stderr)
    prefix = f"[{ctx.rank}/{ctx.size}] " if ctx.size > 1 else ""
    handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(message)s", DATE_FORMAT))
    level = logging.DEBUG if verbose else logging.INFO
    handler.setLevel(level if ctx.is_root else logging.WARNING)
    if not ctx.is_root:
        handler.addFilter(_differs_per_rank)
    log.addHandler(handler)
    log.setLevel(level)
    return log


def get(name: str | None = None) -> logging.Logger:
    """The project logger, or a child of it (``get("train")`` → ``cosmotrain.train``)."""
    return logging.getLogger(f"{LOGGER}.{name}" if name else LOGGER)


def _differs_per_rank(record: logging.LogRecord) -> bool:
    """Off rank 0: errors, and the warnings marked as this rank's own (``rank_warning``)."""
    return record.levelno >= logging.ERROR or getattr(record, "per_rank", False)


def root_warning(logger: logging.Logger, message: str, *args: Any) -> None:
    """A warning that is the same on every rank, printed once (by rank 0)."""
    if dist.context().is_root:
        logger.warning(message, *args)


def rank_warning(logger: logging.Logger, message: str, *args: Any) -> None:
    """A warning about this rank alone (its own share of the data, its own device): every rank prints its own."""
    logger.warning(message, *args, extra={"per_rank": True})


def result(line: str) -> None:
    """A command's result on stdout, printed once (by rank 0), flushed at once."""
    if dist.context().is_root:
        print(line, flush=True)


# ---------------------------------------------------------------- progress

def progress_settings() -> tuple[str, float]:
    """(mode, seconds) from ``COSMOTRAIN_PROGRESS`` and ``COSMOTRAIN_PROGRESS_SECONDS``; a bad value is a UserError."""
    mode = os.environ.get("COSMOTRAIN_PROGRESS", "auto").strip().lower() or "auto"
    if mode not in PROGRESS_MODES:
        raise UserError(f"COSMOTRAIN_PROGRESS={mode!r} is not one of {', '.join(PROGRESS_MODES)}; "
                        f"unset it or pick one (log: one line a minute, for batch jobs)")
    text = os.environ.get("COSMOTRAIN_PROGRESS_SECONDS", "").strip()
    try:
        seconds = float(text) if text else PROGRESS_SECONDS
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise UserError(f"COSMOTRAIN_PROGRESS_SECONDS={text!r} must be a number of seconds >= 0; unset it for "
                        f"the default {PROGRESS_SECONDS:g}")
    return mode, seconds


def on_terminal() -> bool:
    """Whether a person watches this rank's stderr: a terminal here, or the terminal of ``mpirun``.

    Open MPI hands its ranks a pipe for stderr even when ``mpirun`` itself writes to a
    terminal, so under ``mpirun`` the launcher's (the parent's) stderr decides.
    """
    if sys.stderr.isatty():
        return True
    if "OMPI_COMM_WORLD_SIZE" not in os.environ:
        return False
    try:
        target = os.readlink(f"/proc/{os.getppid()}/fd/2")
    except OSError:
        return False
    return target.startswith(("/dev/pts/", "/dev/tty"))


def progress(iterable: Iterable | None = None, **kwargs: Any):
    """Progress of a loop on rank 0: a tqdm bar on a terminal, periodic log lines otherwise.

    Takes tqdm's arguments (``total``, ``initial``, ``desc``, ``unit``, ...) and returns an
    object with tqdm's methods (``update``, ``set_postfix``, ``close``, iteration, ``with``).
    Other ranks, and ``COSMOTRAIN_PROGRESS=off``, get a silent stand-in.
    """
    mode, seconds = progress_settings()
    if not dist.context().is_root or mode == "off":
        return _Silent(iterable)
    if mode == "bar" or (mode == "auto" and on_terminal()):
        from tqdm.auto import tqdm

        kwargs.setdefault("dynamic_ncols", True)
        kwargs.setdefault("mininterval", 1.0)
        _BarAwareHandler.bars = True
        return tqdm(iterable, **kwargs)
    return ProgressLines(iterable, every=seconds, **kwargs)


class _BarAwareHandler(logging.StreamHandler):
    """A stderr handler that, while tqdm bars are on screen, prints each line above them instead of onto them."""

    bars = False  # set once a bar was made in this process

    def emit(self, record: logging.LogRecord) -> None:
        if not self.bars:
            super().emit(record)
            return
        from tqdm import tqdm

        with tqdm.external_write_mode(file=self.stream):
            super().emit(record)


class _Silent:
    """What non-root ranks get instead of a progress bar."""

    def __init__(self, iterable: Iterable | None = None, **_: Any):
        self._iterable = iterable

    def __iter__(self):
        return iter(self._iterable or ())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


class ProgressLines(_Silent):
    """A progress bar for log files: an INFO line every ``every`` seconds, and a last one when it closes.

    ``gan: 50% (200/400 steps), 3.1 steps/s, 1m05s left; loss=0.41``. Nothing is printed
    for a loop shorter than ``every``: its own summary line says enough.
    """

    def __init__(self, iterable: Iterable | None = None, total: float | None = None, initial: float = 0,
                 desc: str = "", unit: str = "it", every: float = PROGRESS_SECONDS, **_: Any):
        super().__init__(iterable)
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.first = total, initial, initial
        self.desc, self.unit, self.every = desc or "progress", unit, every
        self.started = self.reported = time.monotonic()
        self.reported_n: float | None = None
        self.postfix = ""

    def __iter__(self):
        for item in self._iterable or ():
            yield item
            self.update(1)

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.reported >= self.every:
            self._report(now)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def close(self) -> None:
        if self.reported_n is not None and self.n != self.reported_n:
            self._report(time.monotonic())
        self.reported_n = self.n  # a second close prints nothing more

    def _report(self, now: float) -> None:
        self.reported, self.reported_n = now, self.n
        get("progress").info(self.line(now - self.started))

    def line(self, elapsed: float) -> str:
        """The progress line after ``elapsed`` seconds."""
        rate = (self.n - self.first) / elapsed if elapsed > 0 else 0.0
        units = _plural(self.unit)
        if self.total:
            text = f"{self.desc}: {100.0 * self.n / self.total:.0f}% ({_count(self.n)}/{_count(self.total)} {units})"
        else:
            text = f"{self.desc}: {_count(self.n)} {units}"
        text += f", {rate:.3g} {units}/s"
        if self.total and rate > 0 and self.n < self.total:
            text += f", {_duration((self.total - self.n) / rate)} left"
        elif self.total and self.n >= self.total:
            text += f", done in {_duration(elapsed)}"
        return f"{text}; {self.postfix}" if self.postfix else text


def _plural(unit: str) -> str:
    if unit.endswith("s") or unit == "it":
        return unit
    return unit[:-1] + "ies" if unit.endswith("y") and unit[-2:-1] not in "aeiou" else unit + "s"


def _count(n: float) -> str:
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.1f}"


def _duration(seconds: float) -> str:
    """``seconds`` as ``42s``, ``3m05s`` or ``2h07m``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
