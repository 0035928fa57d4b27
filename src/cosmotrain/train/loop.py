"""What both training loops share around the step: pre-emption, NaN, requeueing, and the collector.

``RequeueSignal`` notes SIGUSR1 and SIGTERM (SLURM's warning before pre-emption or the time
limit, and its signal at that moment);
``agree_in_step`` lets all ranks learn inside the step itself whether any rank wants to stop
or saw a NaN loss (one allreduce fused with the gradients', so no extra round trip per
step); ``requeue`` checkpoints and leaves with ``dist.EXIT_REQUEUE``; ``nonfinite_error`` is
the one-line message of a NaN loss; ``freeze_garbage`` keeps the garbage collector out of
the loop's way.
"""
from __future__ import annotations

import gc
import signal

import tensorflow as tf

from cosmotrain import dist, logs
from cosmotrain.checkpoints import Checkpointer, TrainState
from cosmotrain.errors import UserError

log = logs.get("train")


def freeze_garbage() -> None:
    """Put every object alive now (TensorFlow's, the model's) out of the garbage collector's way.

    With TensorFlow loaded, each full collection walks ~300k objects for ~0.1 s, and the
    input thread allocates enough to set off several per epoch: reading ran at half speed
    in those epochs. Objects made later are still collected as usual.
    """
    gc.collect()
    gc.freeze()


class RequeueSignal:
    """Notes SIGUSR1 and SIGTERM: SLURM's warning before pre-emption or the time limit
    (``#SBATCH --signal``), and the signal it sends at that moment, ``KillWait`` seconds
    (30 by default) before SIGKILL.

    Use as a context manager around the training loop; ``requested`` turns True when either
    signal arrives on this rank (``received`` names it). The handler only sets the flag: the
    loop decides, at the next step boundary and together with the other ranks, to checkpoint
    and exit with ``dist.EXIT_REQUEUE``. So the time between the signal and the exit is at
    most one step plus one checkpoint write.
    """

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __init__(self, signals: tuple = SIGNALS):
        self.signals = tuple(signals)
        self.requested = False
        self.received: str | None = None
        self._previous: dict = {}

    def _note(self, signum, frame) -> None:
        self.requested = True
        self.received = signal.Signals(signum).name

    def __enter__(self) -> "RequeueSignal":
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc) -> bool:
        if self.requested:  # the process is on its way out: a late signal (SLURM signals every
            return False    # process, not all at once) must not turn exit 75 into death by signal
        for signum, previous in self._previous.items():
            signal.signal(signum, previous or signal.SIG_DFL)
        return False


def agree_in_step(stop_requested, loss, name: str) -> tuple[tf.Tensor, tf.Tensor]:
    """Inside a step: (any rank asked to stop, any rank's ``loss`` is NaN/inf), bool scalars.

    One small allreduce, issued in the same graph as the gradients' and fused with them by
    Horovod, so every rank learns both facts at this step's end at no extra latency. Give
    each step function its own ``name``.
    """
    local = tf.stack([tf.cast(stop_requested, tf.float32),
                      tf.cast(tf.logical_not(tf.math.is_finite(loss)), tf.float32)])
    total = dist.allreduce_mean(local, name=name)
    return total[0] > 0, total[1] > 0


class NonFiniteLoss(UserError):
    """The loss became NaN or inf: training stopped, nothing was saved after the last good state."""


def nonfinite_error(where: str, last_checkpoint: str | None) -> NonFiniteLoss:
    """The one-line message for a NaN/inf loss at ``where`` (e.g. 'epoch 3, step 120')."""
    kept = (f"the last good checkpoint {last_checkpoint} is kept" if last_checkpoint
            else "no checkpoint had been written yet")
    return NonFiniteLoss(f"loss became NaN/inf at {where}; training stopped and {kept}; "
                         f"lower optimizer.base_lr (or check the data), then rerun with --resume")


def requeue(ckpt: Checkpointer, state: TrainState, local_sums: list[float], where: str, saved: bool = False,
            received: str | None = None) -> int:
    """Checkpoint ``state`` with every rank's ``local_sums`` (unless ``saved``) and return ``dist.EXIT_REQUEUE``.

    Collective: every rank calls it. ``where`` (e.g. "epoch 3, batch 40") goes into the log,
    with ``received``, the signal this rank got (None: another rank got it).
    No rank returns before rank 0's checkpoint is on disk.
    """
    why = received or "a stop signal on another rank"
    path = ckpt.latest() if saved else ckpt.save_all(state, local_sums)
    logs.root_warning(log, "%s: checkpointed %s at %s (global step %d)", why, path, where, state.step)
    logs.root_warning(log, "stopping for requeue (exit %d); continue with --resume", dist.EXIT_REQUEUE)
    dist.barrier()
    return dist.EXIT_REQUEUE
