"""The stall watchdog: a job in which no rank makes progress is ended, naming the rank(s) that stalled.

A rank can stop without dying: a hung file system, a stuck GPU, a process stopped by a
signal. The others then wait in their next collective for ever. To end such a job, every
rank keeps a heartbeat file, ``RUN/heartbeat/rank-RRRRR.json``, written by a thread of its
own every few seconds::

    {"rank": 1, "host": "n2", "pid": 4711, "step": 40, "phase": "training step",
     "beat": 57, "moved": 41, "time": 1796402533.2, "moved_time": 1796402531.0}

``beat`` counts the thread's writes (the process is alive), ``moved`` the main thread's
progress marks (``Watchdog.progress``: a step done, a phase begun; an attribute assignment,
no I/O). The thread also reads the other ranks' files and notes, on its own clock, when
each counter last changed (so the nodes' clocks need not agree; only a rank seen for the
first time is dated by the wall-clock times it wrote, and not before this rank's watchdog
started). When no rank has moved
for ``stall_timeout`` seconds, the job is stuck: the thread prints one line naming the
ranks that stalled — those whose heartbeat stopped (the process is stopped or hung), else
those furthest behind — with their host, step and phase, and ends the whole job
(``dist.abort``, exit ``EXIT_STALLED``). While any rank still moves, nothing happens: the
others are waiting for it.

Ranks 0 and 1 read every file; the others read theirs and those two, and read every file
only when both have gone silent, so the file system sees O(ranks) reads per period, not
O(ranks²). A write that hangs (the heartbeat folder's file system itself is stuck) is
noticed too: the rank then ends the job naming itself.

Time this process itself stood still is nobody's stall: when the thread wakes more than
``SUSPENDED`` periods late (the whole job stopped and continued, as ``scontrol suspend`` and
``resume`` do; or this rank stopped, then continued by its launcher to be ended), every
clock it judges by moves on by the time lost, so it judges only what it has seen since.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from cosmotrain import dist
from cosmotrain.config import ConfigError
from cosmotrain.files import atomic_write_json

EXIT_STALLED = 3  # the exit code of a job the watchdog ended
JUDGES = (0, 1)   # ranks that read every heartbeat file
SUSPENDED = 4     # a wake this many beat periods late: the process stood still meanwhile


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """The ``runtime`` section: how the job guards itself while it runs.

    ``stall_timeout``: seconds without progress on any rank after which the whole job is
    ended (exit 3) naming the stalled rank(s); 0 turns the watchdog off. It must exceed the
    longest step, checkpoint or monitor of the run (the default, 600 s, leaves room).
    """

    stall_timeout: float = 600.0

    def __post_init__(self):
        if self.stall_timeout != 0 and not 5 <= self.stall_timeout <= 7 * 86400:
            raise ConfigError(f"runtime.stall_timeout must be 0 (off) or 5..604800 seconds, got {self.stall_timeout}")


def beat_period(timeout: float) -> float:
    """Seconds between heartbeats: a twentieth of the timeout, between 0.5 and 10 s."""
    return min(10.0, max(0.5, timeout / 20))


def heartbeat_file(folder: Path, rank: int) -> Path:
    return folder / f"rank-{rank:05d}.json"


@dataclasses.dataclass
class _Seen:
    """What this rank knows of another: its last heartbeat and when (on our clock) its counters last changed."""

    record: dict
    beat_at: float
    moved_at: float


class Watchdog:
    """Heartbeats of this rank and the judgement of everyone's; see the module docstring.

    ``progress(step, phase)`` is what the main thread calls; ``start``/``stop`` (or ``with``)
    run the thread. With ``timeout`` 0 it does nothing at all.
    """

    def __init__(self, folder: str | os.PathLike, timeout: float):
        ctx = dist.context()
        self.folder, self.timeout, self.rank, self.size = Path(folder), float(timeout), ctx.rank, ctx.size
        self.period = beat_period(self.timeout)
        self.step, self.phase, self.moved, self.beat = 0, "starting", 0, 0
        self.moved_time = time.time()
        self.seen: dict[int, _Seen] = {}
        self.io_ok_at = self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._io: threading.Thread | None = None  # one write-and-read at a time, which may hang
        self._found: dict[int, dict] | None = None

    # ------------------------------------------------------------ the main thread

    def progress(self, step: int, phase: str) -> None:
        """Mark progress: ``step`` (global step) reached, now doing ``phase`` (a few words)."""
        self.step, self.phase = int(step), phase
        self.moved += 1
        self.moved_time = time.time()

    def tracked(self, items: Iterable, step: int, phase: str) -> Iterator:
        """``items``, marking progress (``step``, ``phase``) as each one is taken."""
        for item in items:
            self.progress(step, phase)
            yield item

    def start(self) -> "Watchdog":
        if self.timeout > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.period)

    def __enter__(self) -> "Watchdog":
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False

    # ------------------------------------------------------------ the thread

    def _watch(self) -> None:
        woke = time.monotonic()
        while not self._stop.wait(self.period):
            now = time.monotonic()
            self._forgive(now - woke - self.period)
            woke = now
            if self._io is None or not self._io.is_alive():
                if self._found is not None:
                    self._absorb(self._found, now)
                    self._found, self.io_ok_at = None, now
                self._io = threading.Thread(target=self._exchange, args=(self._watched(),), name="heartbeat-io",
                                            daemon=True)
                self._io.start()
            verdict = self.verdict(now)
            if verdict:
                _end_job(verdict)

    def _forgive(self, lost: float) -> None:
        """Move every clock this rank judges by on by ``lost`` seconds when it stood still that long."""
        if lost < SUSPENDED * self.period:
            return
        self.started, self.io_ok_at = self.started + lost, self.io_ok_at + lost
        for seen in self.seen.values():
            seen.beat_at, seen.moved_at = seen.beat_at + lost, seen.moved_at + lost

    def _watched(self) -> list[int]:
        """The ranks whose files this rank reads this time (see the module docstring)."""
        judges = [r for r in JUDGES if r < self.size]
        if self.rank in judges or all(self._silent(r, time.monotonic()) for r in judges if r != self.rank):
            return list(range(self.size))
        return sorted({self.rank, *judges})

    def _exchange(self, ranks: list[int]) -> None:
        """Write this rank's heartbeat, read those of ``ranks`` into ``_found`` (a thread of its own)."""
        self.beat += 1
        record = {"rank": self.rank, "host": socket.gethostname(), "pid": os.getpid(), "step": self.step,
                  "phase": self.phase, "beat": self.beat, "moved": self.moved, "time": round(time.time(), 1),
                  "moved_time": round(self.moved_time, 1)}
        try:
            atomic_write_json(heartbeat_file(self.folder, self.rank), record)
        except OSError:
            pass  # a full disk: training itself will say so; the others see this rank as silent meanwhile
        found = {}
        for rank in ranks:
            try:
                found[rank] = json.loads(heartbeat_file(self.folder, rank).read_text())
            except (OSError, ValueError):
                pass  # not written yet, or being replaced: read it next time
        self._found = found

    def _absorb(self, records: dict[int, dict], now: float) -> None:
        for rank, record in records.items():
            old = self.seen.get(rank)
            if old is None:  # first sight: dated by the times it wrote, not before this watchdog's (moved) start
                wall = time.time()
                self.seen[rank] = _Seen(record, max(self.started, now - max(0.0, wall - record.get("time", wall))),
                                        max(self.started, now - max(0.0, wall - record.get("moved_time", wall))))
                continue
            if record.get("beat") != old.record.get("beat") or record.get("pid") != old.record.get("pid"):
                old.beat_at = now
            if record.get("moved") != old.record.get("moved") or record.get("pid") != old.record.get("pid"):
                old.moved_at = now
            old.record = record

    def _silent(self, rank: int, now: float) -> bool:
        seen = self.seen.get(rank)
        return now - (seen.beat_at if seen else self.started) > self.timeout

    # ------------------------------------------------------------ the judgement

    def verdict(self, now: float) -> str | None:
        """The one-line reason to end the job now, or None while some rank still makes progress."""
        if now - self.io_ok_at > self.timeout:
            return (f"stall: rank {self.rank} could not write its heartbeat to {self.folder} for "
                    f"{now - self.io_ok_at:.0f} s (a hung file system?); ending the job")
        if self.rank not in JUDGES and not self._judges_silent(now):
            return None  # the judges see every rank; the others step in when both are silent
        ages = {r: now - (self.seen[r].moved_at if r in self.seen else self.started) for r in range(self.size)}
        if min(ages.values()) <= self.timeout:
            return None
        silent = [r for r in range(self.size) if self._silent(r, now)]
        if silent:
            return self._message(silent, now, "silent")
        behind = min(self._step(r) for r in range(self.size))
        return self._message([r for r in range(self.size) if self._step(r) == behind], now, "stuck")

    def _judges_silent(self, now: float) -> bool:
        return all(self._silent(r, now) for r in JUDGES if r < self.size and r != self.rank)

    def _step(self, rank: int) -> int:
        return self.seen[rank].record.get("step", 0) if rank in self.seen else -1

    def _message(self, ranks: list[int], now: float, how: str) -> str:
        described = []
        for rank in ranks[:8]:
            seen = self.seen.get(rank)
            if seen is None:
                described.append(f"rank {rank} never wrote a heartbeat")
                continue
            record, since = seen.record, now - (seen.beat_at if how == "silent" else seen.moved_at)
            what = "stopped responding" if how == "silent" else "made no progress for"
            described.append(f"rank {rank} (host {record.get('host')}, pid {record.get('pid')}) {what} "
                             f"{since:.0f} s{' ago' if how == 'silent' else ''}, at step {record.get('step')} in "
                             f"'{record.get('phase')}'")
        more = f" and {len(ranks) - 8} more" if len(ranks) > 8 else ""
        return (f"stall: no rank has made progress for over {self.timeout:g} s (runtime.stall_timeout): "
                f"{'; '.join(described)}{more}; ending the job (exit {EXIT_STALLED})")


def _end_job(message: str) -> None:
    """Print ``message`` as this rank's one line and end every rank of the job."""
    dist.say(f"error: {message}")
    dist.abort(EXIT_STALLED)
