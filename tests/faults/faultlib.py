"""Helpers of the fault tests: commands run in the background, their ranks, signals, full disks.

Waits here are hang guards (a generous limit, then the test fails saying what never
happened), never speed assertions.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from testlib import BIN, REPO, mpi_env, run_cli

CLASSIFIER = ["--config", str(REPO / "configs" / "classifier_tiny.yaml")] + [a for s in (
    "model.filters=[8, 16]", "model.dense=[16]", "train.batch_size=16", "train.epochs=2") for a in ("--set", s)]
GAN = ["--config", str(REPO / "configs" / "gan_tiny.yaml")] + [a for s in (
    "model.image_size=32", "model.latent_dim=16", "model.g_filters=32", "model.d_filters=8", "train.batch_size=8",
    "train.steps=6", "train.log_every=2", "train.checkpoint_every=2", "monitor.every=3", "monitor.generated=32",
    "monitor.group_size=2", "monitor.reference=32", "monitor.ks_draws=2", "monitor.pixels_per_patch=16",
    "monitor.examples=3", "monitor.calibration_patches=256") for a in ("--set", s)]
HANG = 600  # seconds after which a wait fails the test: something hangs


def cli(*args, np_: int = 1, env: dict | None = None, timeout: float = HANG) -> subprocess.CompletedProcess:
    """``cosmotrain ARGS`` to completion (under ``mpirun -np np_`` when > 1)."""
    return run_cli(*args, np_=np_, timeout=timeout, env=env)


def one_error_line(out: subprocess.CompletedProcess | str, code: int = 2) -> str:
    """The command's one error message (the same line on every rank that printed it), after
    checking its exit code and that no traceback was printed."""
    text = out if isinstance(out, str) else out.stderr + out.stdout
    if not isinstance(out, str):
        assert out.returncode == code, f"exit {out.returncode}, expected {code}:\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    messages = {line.split("error: ", 1)[1] for line in text.splitlines() if "cosmotrain" in line and "error: " in line}
    assert len(messages) == 1, f"expected one error message, got {messages}:\n{text[-3000:]}"
    return messages.pop()


def snapshot(folder: Path) -> dict:
    """{relative path: (size, mtime_ns)} of every file under ``folder``: to show nothing was touched."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill the file system of ``disk`` with a ballast file until about ``leave`` bytes are free."""
    ballast = disk / "ballast"
    with open(ballast, "ab") as fh:
        while True:
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            if free <= leave:
                break
            try:
                fh.write(b"\0" * min(free - leave, 1 << 20))
                fh.flush()
            except OSError:
                break
    return ballast


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class Job:
    """``cosmotrain ARGS`` running in the background, in a session of its own (so the test can
    signal its ranks, or all of it), its output in a file."""

    def __init__(self, *args, np_: int = 1, log: Path, env: dict | None = None):
        cmd = [str(BIN / "cosmotrain"), *map(str, args)]
        if np_ > 1:
            cmd = ["mpirun", "-np", str(np_), "--bind-to", "none"] + cmd
        self.log = Path(log)
        self._out = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, cwd=REPO,
                                     env=env or mpi_env(), start_new_session=True)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, condition: Callable[[], object], what: str, timeout: float = HANG, every: float = 0.2):
        """Poll ``condition`` until it is true (returns its value); fail if the job ends first or it hangs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"the job ended (exit {self.proc.returncode}) before {what}:\n"
                                     f"{self.output[-3000:]}")
            time.sleep(every)
        raise AssertionError(f"{what} did not happen within {timeout:.0f} s:\n{self.output[-3000:]}")

    def finish(self, timeout: float = HANG) -> int:
        """Wait for the job to end; its exit code (the test fails if it is still running after ``timeout``)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the job was still running {timeout:.0f} s later:\n{self.output[-3000:]}")
        finally:
            self._out.close()

    def kill(self) -> None:
        """SIGKILL to every process of the job (launcher and ranks)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def ranks(self) -> list[int]:
        """Process ids of the ranks: the launcher's children under mpirun, else the process itself."""
        children = [pid for pid in _children(self.proc.pid)]
        return sorted(children) if children else [self.proc.pid]


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found.append(int(entry.name))
    return found


def heartbeat(run: Path, rank: int) -> dict | None:
    """Rank ``rank``'s heartbeat record in ``run`` (None until it wrote one)."""
    try:
        return json.loads((run / "heartbeat" / f"rank-{rank:05d}.json").read_text())
    except (OSError, ValueError):
        return None


def at_step(run: Path, step: int, ranks: int = 1) -> bool:
    """True once every rank's heartbeat shows ``step`` or later."""
    records = [heartbeat(run, r) for r in range(ranks)]
    return all(r is not None and r["step"] >= step for r in records)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def all_gone(pids: list[int], guard: float = 120) -> bool:
    """Wait (at most ``guard`` seconds: a hang guard) until none of ``pids`` runs; True if none does."""
    deadline = time.monotonic() + guard
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not any(alive(pid) for pid in pids)


def latest_checkpoint(run: Path) -> int | None:
    """The global step of the checkpoint ``run/checkpoints/checkpoint`` names (None: none yet)."""
    index = run / "checkpoints" / "checkpoint"
    if not index.is_file():
        return None
    first = index.read_text().splitlines()[0]
    return int(first.split('"')[1].rsplit("-", 1)[1])
