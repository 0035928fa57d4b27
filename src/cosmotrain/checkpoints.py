"""Checkpoints of the whole training state: rank 0 writes, every rank restores.

A checkpoint is a ``tf.train.Checkpoint`` of the trainer's objects (models, optimizers)
plus one string variable, ``state``, holding a JSON ``TrainState``: epoch, position in the
epoch, global step, best validation figure, early-stopping counter, per-rank partial sums,
the seed, and a ``signature`` of what the objects are (model config, input shape, optimizer
name). On restore the signature is compared first, so a checkpoint of another model or config
is refused with a message naming the first differences instead of a shape error deep in TF.

``RUN/checkpoints/ckpt-N.*`` (newest ``keep``) and ``RUN/checkpoints/best/ckpt-N.*`` (one, the
best by validation loss or monitor score) are written by ``tf.train.CheckpointManager``:
TensorFlow writes the data under a temporary name and then records the new checkpoint in the
``checkpoint`` index file atomically, so an interrupted save leaves the previous checkpoint
current.

Every command that takes ``--checkpoint`` resolves it with ``resolve``: ``best``, ``latest``
or a path (a prefix such as ``RUN/checkpoints/ckpt-500``, or a folder); ``digest`` is the
sha256 that sample and prediction sets record of the weights they came from.

Optimizers must hold their slot variables before ``restore`` (``optimizer.build(vars)``),
so that their values are restored immediately rather than on first use.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import tensorflow as tf

from typing import Callable, Iterable

from cosmotrain import dist
from cosmotrain.errors import UserError
from cosmotrain.files import storage_errors
from cosmotrain.rundir import RunDir

STATE_KEY = "state/.ATTRIBUTES/VARIABLE_VALUE"


@dataclasses.dataclass
class TrainState:
    """Where a run is. Epochs and batches count completed work.

    ``batch`` > 0 means a mid-epoch checkpoint: epoch ``epoch`` + 1 is in progress and its
    first ``batch`` batches are done; ``rank_sums`` then holds each rank's partial sums.
    """

    epoch: int = 0
    batch: int = 0
    step: int = 0
    size: int = 1
    seed: int = 0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    rank_sums: list = dataclasses.field(default_factory=list)
    signature: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainState":
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


class CheckpointError(UserError):
    """A checkpoint that cannot be used here (other model, other config, damaged)."""


class Checkpointer:
    """Save and restore ``objects`` (name → trackable) with a ``TrainState``.

    ``signature`` (JSON-able dict) describes what must match for a restore to make sense.
    Create on every rank; ``save`` writes on rank 0 only (others return at once).
    ``on_first_save`` is called (rank 0) once the first checkpoint of this process is on disk.
    A full disk or read-only folder while saving is a one-line ``StorageError``; the
    checkpoints saved before stay intact and current.
    """

    def __init__(self, directory: str | Path, objects: dict[str, Any], signature: dict, keep: int = 3,
                 on_first_save: Callable[[], None] | None = None):
        self.directory = Path(directory)
        self._on_first_save = on_first_save
        self.signature = json.loads(json.dumps(signature))
        self._state = tf.Variable("", dtype=tf.string, trainable=False, name="train_state")
        self._ckpt = tf.train.Checkpoint(**objects, state=self._state)
        self._latest = tf.train.CheckpointManager(self._ckpt, str(self.directory), max_to_keep=keep)
        self._best = tf.train.CheckpointManager(self._ckpt, str(self.directory / "best"), max_to_keep=1)

    # ------------------------------------------------------------ writing (rank 0)

    def save(self, state: TrainState, best: bool = False) -> str | None:
        """Write a checkpoint of the current objects and ``state``; returns its path on rank 0.

        ``best`` also writes it as the best checkpoint. Other ranks return None.
        """
        if not dist.context().is_root:
            return None
        state.signature = self.signature
        self._state.assign(state.to_json())
        last = newest(self.directory)
        fix = (f"free space or fix the folder, then continue with --resume (from {last}, intact)" if last else
               "free space or fix the folder, then run again (no checkpoint had been written)")
        with storage_errors(self.directory / f"ckpt-{state.step}", fix):
            path = self._latest.save(checkpoint_number=state.step)
            if best:
                self._best.save(checkpoint_number=state.step)
        if self._on_first_save is not None:
            self._on_first_save()
            self._on_first_save = None
        return path

    def save_all(self, state: TrainState, local_sums: list[float], best: bool = False) -> str | None:
        """``save`` with every rank's partial sums in ``state.rank_sums`` (collective: every rank calls it)."""
        state.rank_sums = dist.allgather_object(local_sums)
        path = self.save(state, best=best)
        state.rank_sums = []
        return path

    # ------------------------------------------------------------ reading (every rank)

    def latest(self) -> str | None:
        """Path prefix of the newest checkpoint, as rank 0 sees it (same on every rank)."""
        return dist.root_computes(newest, self.directory)

    def restore(self, path: str) -> TrainState:
        """Load ``path`` into the objects after checking its signature; returns its state."""
        state = read_state(path)
        check_signature(path, state.signature, self.signature)
        try:
            self._ckpt.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            first = str(err).strip().splitlines()[0][:200]
            raise CheckpointError(f"checkpoint {path} does not fit this model ({first}); "
                                  f"resume with the run's own config.yaml or start a new --out") from None
        return state


def read_state(path: str) -> TrainState:
    """The ``TrainState`` stored in checkpoint ``path`` (no objects are loaded)."""
    try:
        reader = tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint {path} ({type(err).__name__}); "
                              f"it is damaged or missing; delete it to fall back to an older one") from None
    if not reader.has_tensor(STATE_KEY):
        raise CheckpointError(f"{path} is not a cosmotrain checkpoint (no training state in it)")
    value = reader.get_tensor(STATE_KEY)
    return TrainState.from_json(value.decode() if isinstance(value, bytes) else str(value))


def check_signature(path: str, found: dict, expected: dict) -> None:
    """Raise ``CheckpointError`` naming the first differences between two signatures."""
    a, b = _flatten(found), _flatten(expected)
    diffs = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if diffs:
        shown = "; ".join(f"{k} is {a.get(k)!r} there, {b.get(k)!r} here" for k in diffs[:3])
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise CheckpointError(f"checkpoint {path} was made by a different model or config: {shown}{more}; "
                              f"resume with the run's own config.yaml or start a new --out")


def _flatten(tree: Any, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def variable_bytes(variables: Iterable[Any]) -> int:
    """Bytes the values of ``variables`` (tf.Variable) take."""
    return sum(int(v.shape.num_elements()) * v.dtype.size for v in variables)


def space_needed(checkpoint_bytes: int, keep: int) -> int:
    """Bytes a run takes on disk at most: ``keep`` latest checkpoints of ``checkpoint_bytes`` each,
    the best one and one being written, plus 32 MB for its records (history, TensorBoard, plots)."""
    return checkpoint_bytes * (keep + 2) + (32 << 20)


# ---------------------------------------------------------------- finding checkpoints

def newest(directory: str | Path) -> str | None:
    """Prefix of the newest checkpoint recorded in ``directory``; None when there is none."""
    directory = Path(directory)
    return tf.train.latest_checkpoint(str(directory)) if directory.is_dir() else None


def resolve(run: str | Path, checkpoint: str = "best", made_by: str = "cosmotrain train") -> str:
    """The checkpoint prefix meant by ``checkpoint``: "best", "latest", or a path (prefix or folder).

    ``made_by`` names the command that makes such runs, for the error message.
    """
    layout = RunDir(run)
    if checkpoint in ("best", "latest"):
        path = newest(layout.best_checkpoints if checkpoint == "best" else layout.checkpoints)
        if path is None:
            hint = ("none is marked best yet (that happens at the first validation or monitor); use "
                    "--checkpoint latest" if checkpoint == "best" and layout.checkpoints.is_dir()
                    else f"is it a run made by '{made_by}'?")
            raise UserError(f"{run} has no {checkpoint} checkpoint; {hint}")
        return path
    path = Path(checkpoint)
    if path.is_dir():
        found = newest(path)
        if found is None:
            raise UserError(f"{path} holds no checkpoint; pass a run's checkpoint prefix such as "
                            f"RUN/checkpoints/ckpt-500")
        return found
    if not Path(f"{path}.index").is_file():
        raise UserError(f"checkpoint {path} not found (no {path}.index); pass 'best', 'latest' or a checkpoint prefix")
    return str(path)


def digest(prefix: str) -> str:
    """sha256 over a checkpoint's index and data files, in name order (each file's suffix, then its bytes)."""
    import hashlib

    total = hashlib.sha256()
    path = Path(prefix)
    for file in sorted(path.parent.glob(path.name + ".*")):
        total.update(file.name.split(".", 1)[1].encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                total.update(block)
    return total.hexdigest()
