"""A run directory, and the one place that decides that rank 0 writes a job's files.

Everything a training run writes goes under one folder (``RunDir``)::

    RUN/config.yaml         the resolved config (every default filled in)
    RUN/history.csv         one row per epoch (classifier) or per log step (GAN)
    RUN/metrics.json        the run's summary, written at its end
    RUN/checkpoints/        ckpt-N.* (newest few) and best/ckpt-N.* (see ``checkpoints``)
    RUN/tensorboard/        TensorBoard event files
    RUN/plots/              the GAN's figures
    RUN/monitors/best.json  the GAN's best monitor so far
    RUN/eval/               what ``evaluate classifier`` writes
    RUN/heartbeat/          one file per rank: its step and phase, for the stall watchdog
    RUN/.replaced/          a finished run that ``--overwrite`` replaces, deleted at the new
                            run's first checkpoint

Files shared by the whole job are written by rank 0 alone, through ``write_text``,
``write_json``, ``write_figure`` and ``write_with``; every other rank skips them. Only
checkpoint saving (``checkpoints.Checkpointer``) and the sample-set engine (``sampleset``)
decide that on their own.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cosmotrain import config, dist, logs
from cosmotrain.config import ConfigError
from cosmotrain.errors import UserError
from cosmotrain.files import (atomic_write_json, atomic_write_text, save_figure, space_problem, storage_errors,
                              writable_problem)

log = logs.get("run")

MIDRUN_FIX = "free space or fix the folder, then continue with --resume (every file written before is intact)"


# ---------------------------------------------------------------- rank 0 writes

def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, on rank 0 only."""
    if dist.context().is_root:
        with storage_errors(path, MIDRUN_FIX):
            atomic_write_text(path, text)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically, on rank 0 only."""
    if dist.context().is_root:
        with storage_errors(path, MIDRUN_FIX):
            atomic_write_json(path, data)


def write_figure(path: str | Path, draw: Callable[..., Any], *args: Any, dpi: int = 110) -> Path | None:
    """On rank 0: ``draw(*args)`` makes a matplotlib figure, saved as PNG at ``path``.

    ``draw`` may return None (nothing to show): then nothing is written. Returns the path
    written (rank 0) or None.
    """
    if not dist.context().is_root:
        return None
    import matplotlib

    matplotlib.use("Agg")
    figure = draw(*args)
    if figure is None:
        return None
    with storage_errors(path, MIDRUN_FIX):
        save_figure(figure, path, dpi)
    return Path(path)


def write_with(writer: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``writer`` (a function that writes files) on rank 0 only; its result there, None elsewhere."""
    if dist.context().is_root:
        return writer(*args, **kwargs)
    return None


# ---------------------------------------------------------------- the layout

class RunDir:
    """The paths of one run directory (nothing is created by naming them)."""

    OUTPUTS = ("config.yaml", "history.csv", "metrics.json", "checkpoints", "tensorboard", "plots", "monitors",
               "eval", "heartbeat")

    def __init__(self, path: str | Path):
        self.path = p = Path(path)
        self.config, self.history, self.metrics = p / "config.yaml", p / "history.csv", p / "metrics.json"
        self.checkpoints, self.tensorboard, self.plots = p / "checkpoints", p / "tensorboard", p / "plots"
        self.monitors, self.eval, self.heartbeat = p / "monitors", p / "eval", p / "heartbeat"
        self.best_checkpoints, self.best_monitor = self.checkpoints / "best", self.monitors / "best.json"
        self.replaced = self.path / ".replaced"

    def __str__(self) -> str:
        return str(self.path)

    def save_config(self, cfg: Any) -> None:
        """The resolved config as ``config.yaml`` (rank 0)."""
        write_with(config.save, cfg, self.config)

    def saved_config(self) -> dict:
        """The run's ``config.yaml`` as a plain dict; {} when there is none."""
        return config.read_yaml(self.config) if self.config.is_file() else {}

    def held(self) -> list[str]:
        """The names of ``OUTPUTS`` present in the folder."""
        return [name for name in self.OUTPUTS if (self.path / name).exists()]

    def has_checkpoint(self) -> bool:
        """True when a checkpoint has been recorded (TensorFlow's ``checkpoints/checkpoint`` index)."""
        return (self.checkpoints / "checkpoint").is_file()

    def worth_keeping(self) -> bool:
        """A run with something to lose: a checkpoint, or a finished run's ``metrics.json``."""
        return self.has_checkpoint() or self.metrics.is_file()

    def drop_replaced(self) -> None:
        """Delete the run ``--overwrite`` moved aside (rank 0): the new run has its first checkpoint."""
        if dist.context().is_root and self.replaced.exists():
            shutil.rmtree(self.replaced, ignore_errors=True)
            log.info("deleted the replaced run's outputs (%s): this run has its first checkpoint", self.replaced)


# ---------------------------------------------------------------- claiming and configuring a run

def claim(run: str | Path, resume: bool, overwrite: bool, needed_bytes: int = 0) -> RunDir:
    """Check, on every rank and before any work, that ``run`` may receive this run; then take it.

    Refused (one line, on every rank; nothing touched): ``--resume`` with ``--overwrite``, a
    file, a folder that cannot be written or lacks ``needed_bytes`` free (the run's estimated
    size), and a run worth keeping (``RunDir.worth_keeping``) without ``--resume`` or
    ``--overwrite``. Then rank 0 prepares the folder:

    * ``--overwrite`` moves a run worth keeping into ``RUN/.replaced`` (deleted at the new
      run's first checkpoint, ``drop_replaced``; until then it can be moved back);
    * outputs of a run that stopped before its first checkpoint are removed, with a warning,
      whatever the flags: there is nothing to resume, so ``--resume`` starts from scratch.
    """
    run_dir = RunDir(run)
    problem = dist.broadcast_object(write_with(_problem, run_dir, resume, overwrite, needed_bytes))
    if problem:
        raise UserError(problem)
    write_with(_prepare, run_dir, resume, overwrite)
    dist.barrier()
    return run_dir


def _problem(run: RunDir, resume: bool, overwrite: bool, needed_bytes: int) -> str | None:
    if resume and overwrite:
        return "--resume and --overwrite contradict each other; pass one of them"
    if run.path.exists() and not run.path.is_dir():
        return f"run directory {run} is a file; choose a folder path for --out"
    unwritable = writable_problem(run.path)
    if unwritable:
        return f"cannot write the run {run}: {unwritable}; choose a writable --out"
    if not resume and not overwrite and run.worth_keeping():
        return (f"{run} already holds a run ({', '.join(run.held())}); continue it with --resume, "
                f"replace it with --overwrite, or pick a new --out")
    if not (resume and run.has_checkpoint()):
        short = space_problem(run.path, needed_bytes, f"the run {run}")
        if short:
            return f"cannot write the run {run}: {short}; free space or choose another --out"
    return None


def _prepare(run: RunDir, resume: bool, overwrite: bool) -> None:
    """Rank 0: make ``run`` ready for a fresh start, or leave it for a resume (see ``claim``)."""
    if resume and run.has_checkpoint():
        return
    held = run.held()
    if overwrite and run.worth_keeping():
        if run.replaced.exists():  # an earlier --overwrite got that far, and no further
            shutil.rmtree(run.replaced)
        run.replaced.mkdir()
        for name in held:
            os.rename(run.path / name, run.replaced / name)
        logs.root_warning(log, "--overwrite: the previous run in %s is kept in %s until this run's first "
                          "checkpoint, then deleted", run, run.replaced)
    else:
        _remove(run, held)
        if resume:
            logs.root_warning(log, "--resume: %s has no checkpoint yet; starting from scratch", run)
        elif held:
            logs.root_warning(log, "%s holds a run that stopped before its first checkpoint; starting this run "
                              "from scratch", run)
    run.path.mkdir(parents=True, exist_ok=True)


def _remove(run: RunDir, names: list[str]) -> None:
    for name in names:
        path = run.path / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def resolve_config(cls: type, config_path: str | None, overrides: list[str], data: str | None,
                   run: str | Path, resume: bool):
    """A run's config of type ``cls``: ``--config`` (or, on resume, the run's own), overrides, ``--data``.

    ``cls.dataset_maker``, the command that makes its dataset, is named when none is given.
    """
    saved = RunDir(run).config
    if config_path is None and resume and saved.is_file():
        config_path = str(saved)
    if data is not None:
        overrides = [*overrides, f"data.path={json.dumps(str(Path(data).resolve()))}"]
    cfg = config.load(cls, config_path, overrides)
    if not cfg.data.path:
        raise ConfigError(f"no dataset given; pass --data DATASET (a folder made by '{cls.dataset_maker}')")
    return cfg


def report_changed_settings(run: RunDir, cfg: Any) -> None:
    """Warn (rank 0) about every setting of ``cfg`` that differs from the run's saved config."""
    if not run.config.is_file():
        return
    before = _flat(config.to_dict(config.load(type(cfg), run.config)))
    after = _flat(config.to_dict(cfg))
    changed = [f"{k} {before.get(k)!r} -> {after.get(k)!r}" for k in sorted(after) if before.get(k) != after.get(k)]
    if changed:
        logs.root_warning(log, "resuming with changed settings (%s); the result may differ from an "
                          "uninterrupted run", "; ".join(changed))


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else key
        out.update(_flat(value, name) if isinstance(value, dict) else {name: value})
    return out


# ---------------------------------------------------------------- records

class History:
    """``history.csv``: one row per finished epoch or log step, rewritten atomically by rank 0.

    On resume, ``resume(k)`` keeps the rows whose ``key`` column is at most k (rows written
    after the checkpoint being resumed are dropped, so the file matches the restored state).
    """

    def __init__(self, path: str | Path, columns: Sequence[str]):
        self.path, self.columns = Path(path), list(columns)
        self.rows: list[dict] = []

    def resume(self, done: int, key: str = "epoch") -> None:
        """Keep the rows whose ``key`` column (an integer count: epoch, or step) is <= ``done``."""
        if self.path.is_file():
            self.rows = [r for r in read_history_rows(self.path) if int(r[key]) <= done]

    def append(self, row: dict) -> None:
        self.rows.append({c: row.get(c, "") for c in self.columns})
        out = io.StringIO()
        writer = csv.DictWriter(out, self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(self.path, out.getvalue())


def read_history_rows(path: str | Path) -> list[dict]:
    """The rows of a ``history.csv`` as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def read_history(path: str | Path) -> dict[str, np.ndarray]:
    """``history.csv`` as columns: {name: float64 [rows]} (empty cells are NaN)."""
    rows = read_history_rows(path)
    names = rows[0].keys() if rows else []
    return {n: np.array([float(r[n]) if r[n] not in ("", None) else np.nan for r in rows]) for n in names}


class Board:
    """TensorBoard scalars, written by rank 0 (a no-op elsewhere); one event file per process start.

    ``tags`` maps a history column to its TensorBoard tag, grouped by what it describes
    (``train/``, ``val/``, ``monitor/``); columns without a tag, and empty cells, are not written.
    """

    def __init__(self, logdir: str | Path, tags: dict[str, str]):
        import tensorflow as tf

        self._tf, self.tags, self.logdir = tf, dict(tags), Path(logdir)
        self.writer = tf.summary.create_file_writer(str(logdir)) if dist.context().is_root else None

    def scalars(self, step: int, row: dict) -> None:
        """Write the tagged cells of one history ``row`` at ``step``."""
        if self.writer is None:
            return
        with storage_errors(self.logdir, MIDRUN_FIX):
            with self.writer.as_default(step=step):
                for column, value in row.items():
                    if column in self.tags and value != "":
                        self._tf.summary.scalar(self.tags[column], value)
            self.writer.flush()

    def close(self) -> None:
        """Close the event file; a write that fails now (a full disk, already reported) is dropped."""
        if self.writer is not None:
            try:
                self.writer.close()
            except self._tf.errors.OpError:
                pass
