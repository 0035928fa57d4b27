"""Shared training pieces in one process: LR schedule, randomness, signal, records, checkpoints, run dirs."""
import math
import os
import signal

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from cosmotrain.errors import UserError  # noqa: E402
from cosmotrain.models.layers import StepDropout  # noqa: E402
from cosmotrain import checkpoints, rundir  # noqa: E402
from cosmotrain.data import augment  # noqa: E402
from cosmotrain.train import loop, randomness, replicas  # noqa: E402
from cosmotrain.train.meters import Meters  # noqa: E402
from cosmotrain.train.schedule import LearningRate, OptimizerConfig, scaled_lr  # noqa: E402


def schedule(**kw):
    cfg = OptimizerConfig(**{"base_lr": 0.001, "base_batch": 32, "warmup_epochs": 2, **kw})
    return LearningRate(cfg, global_batch=128, steps_per_epoch=10, epochs=10)


# ---------------------------------------------------------------- learning rate

def test_peak_lr_scales_with_the_global_batch():
    assert scaled_lr(0.001, 128, 32, "linear") == pytest.approx(0.004)
    assert scaled_lr(0.001, 128, 32, "sqrt") == pytest.approx(0.002)
    assert scaled_lr(0.001, 128, 32, "none") == pytest.approx(0.001)


def test_warmup_is_linear_from_base_lr_to_the_peak_then_constant():
    lr = schedule()
    assert lr.at(0) == pytest.approx(0.001)
    assert lr.at(10) == pytest.approx(0.0025)
    assert [lr.at(s) for s in (20, 50, 99)] == pytest.approx([0.004] * 3)
    assert schedule(warmup_from="zero").at(0) == 0.0


def test_cosine_decay_ends_at_the_floor_on_the_last_step():
    lr = schedule(decay="cosine", final_lr_fraction=0.1)
    assert lr.at(20) == pytest.approx(0.004)
    assert lr.at(60) == pytest.approx(0.0004 + 0.0036 * 0.5 * (1 + math.cos(math.pi * 0.5)), rel=1e-6)
    assert lr.at(100) == pytest.approx(0.0004)


def test_lr_is_a_pure_function_of_the_step_as_resume_needs():
    """A fresh schedule (a resumed process) gives the same LR as one that has run."""
    first, second = schedule(decay="cosine"), schedule(decay="cosine")
    seen = [first.at(s) for s in range(100)]
    assert [second.at(s) for s in reversed(range(100))] == list(reversed(seen))


def test_nonsense_optimizer_settings_are_refused():
    with pytest.raises(UserError, match="base_lr"):
        schedule(base_lr=0.0)


# ---------------------------------------------------------------- randomness

def _masks(seed, rank, step):
    layer = StepDropout(0.5)
    model = tf.keras.Sequential([tf.keras.Input((64,)), layer])
    rng = randomness.StepRandomness([model], seed, rank)
    rng(tf.constant(step, tf.int64))
    return model(tf.ones((4, 64)), training=True).numpy() > 0


def test_dropout_masks_depend_only_on_seed_rank_and_step():
    assert np.array_equal(_masks(1, 0, 5), _masks(1, 0, 5))
    assert not np.array_equal(_masks(1, 0, 5), _masks(1, 0, 6))
    assert not np.array_equal(_masks(1, 0, 5), _masks(1, 1, 5))
    assert 0.3 < _masks(1, 0, 5).mean() < 0.7


def test_dropout_is_the_identity_outside_training():
    layer = StepDropout(0.5)
    x = tf.random.uniform((3, 7))
    assert np.array_equal(layer(x, training=False).numpy(), x.numpy())


# ---------------------------------------------------------------- signal, meters, records

@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_a_stop_signal_is_noted_not_fatal_and_a_late_one_cannot_kill_the_exit(signum):
    before = signal.getsignal(signum)
    with loop.RequeueSignal():
        pass
    assert signal.getsignal(signum) == before  # no signal: the old handler comes back
    with loop.RequeueSignal() as sig:
        assert not sig.requested
        os.kill(os.getpid(), signum)
        assert sig.requested and sig.received == signal.Signals(signum).name
    os.kill(os.getpid(), signum)  # SLURM signals every process, not all at once: a second one on the way out
    assert sig.requested
    signal.signal(signum, before)


def test_meters_sum_inside_a_tf_function_and_reload():
    meters = Meters(("loss", "count"))
    step = tf.function(lambda a, b: meters.add(a, b))
    step(tf.constant(1.5), tf.constant(3))
    step(tf.constant(0.5), tf.constant(1))
    assert meters.global_sums() == {"loss": 2.0, "count": 4.0}
    saved = meters.local()
    meters.reset()
    meters.load(saved)
    assert meters.local() == [2.0, 4.0]


def test_history_resume_drops_rows_after_the_checkpoint(tmp_path):
    path = tmp_path / "history.csv"
    h = rundir.History(path, ("epoch", "loss"))
    for e in (1, 2, 3):
        h.append({"epoch": e, "loss": 1 / e})
    again = rundir.History(path, ("epoch", "loss"))
    again.resume(2)
    again.append({"epoch": 3, "loss": 0.25})
    cols = rundir.read_history(path)
    assert cols["epoch"].tolist() == [1, 2, 3] and cols["loss"].tolist() == [1.0, 0.5, 0.25]


# ---------------------------------------------------------------- checkpoints

def _model(width):
    return tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(width)])


def test_checkpoint_restores_weights_optimizer_and_state(tmp_path):
    model, opt = _model(4), tf.keras.optimizers.Adam(0.1)
    opt.build(model.trainable_variables)
    opt.apply_gradients(zip([tf.ones_like(v) for v in model.trainable_variables], model.trainable_variables))
    ck = checkpoints.Checkpointer(tmp_path, {"model": model, "optimizer": opt}, {"width": 4})
    path = ck.save(checkpoints.TrainState(epoch=2, batch=5, step=7, rank_sums=[[1.0, 2.0]]))
    other, opt2 = _model(4), tf.keras.optimizers.Adam(0.1)
    opt2.build(other.trainable_variables)
    ck2 = checkpoints.Checkpointer(tmp_path, {"model": other, "optimizer": opt2}, {"width": 4})
    assert ck2.latest() == path
    state = ck2.restore(path)
    assert (state.epoch, state.batch, state.step, state.rank_sums) == (2, 5, 7, [[1.0, 2.0]])
    assert replicas.weights_digest(other.variables) == replicas.weights_digest(model.variables)
    assert replicas.weights_digest(opt2.variables) == replicas.weights_digest(opt.variables)


def test_a_checkpoint_of_another_model_is_refused_by_name(tmp_path):
    model = _model(4)
    path = checkpoints.Checkpointer(tmp_path, {"model": model}, {"model": {"width": 4}}).save(checkpoints.TrainState())
    other = checkpoints.Checkpointer(tmp_path, {"model": _model(8)}, {"model": {"width": 8}})
    with pytest.raises(checkpoints.CheckpointError, match=r"different model.*model\.width is 4 there, 8 here"):
        other.restore(path)


def test_a_foreign_checkpoint_is_refused(tmp_path):
    path = tf.train.Checkpoint(model=_model(4)).save(str(tmp_path / "foreign"))
    with pytest.raises(checkpoints.CheckpointError, match="not a cosmotrain checkpoint"):
        checkpoints.read_state(path)


# ---------------------------------------------------------------- run directories

def test_run_dir_rules(tmp_path):
    run = tmp_path / "run"
    rundir.claim(run, resume=False, overwrite=False)
    (run / "config.yaml").write_text("x: 1\n")
    (run / "notes.txt").write_text("mine")
    rundir.claim(run, resume=False, overwrite=False)  # stopped before its first checkpoint: nothing to lose
    assert not (run / "config.yaml").exists() and (run / "notes.txt").read_text() == "mine"
    (run / "config.yaml").write_text("x: 1\n")
    rundir.claim(run, resume=True, overwrite=False)  # nothing to resume: starts from scratch
    assert not (run / "config.yaml").exists()
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-5"\n')
    (run / "metrics.json").write_text("{}")
    with pytest.raises(UserError, match="already holds a run.*--resume.*--overwrite"):
        rundir.claim(run, resume=False, overwrite=False)
    with pytest.raises(UserError, match="contradict"):
        rundir.claim(run, resume=True, overwrite=True)
    assert rundir.claim(run, resume=True, overwrite=False).has_checkpoint()
    replaced = rundir.claim(run, resume=False, overwrite=True)
    assert not (run / "metrics.json").exists() and (run / "notes.txt").read_text() == "mine"
    assert (run / ".replaced" / "metrics.json").exists()  # kept until the new run's first checkpoint
    replaced.drop_replaced()
    assert not (run / ".replaced").exists()


def test_in_step_d4_augmentation_matches_the_numpy_convention():
    images = np.random.default_rng(0).integers(0, 256, (64, 6, 6, 3), dtype=np.uint8)
    seed = randomness.stateless_seed(5, 9)
    k = tf.random.stateless_uniform([64], seed, minval=0, maxval=8, dtype=tf.int32).numpy()
    out = augment.random_d4(tf.constant(images), seed).numpy()
    assert set(k) == set(range(8))
    assert np.array_equal(out, augment.d4_transform(images, k))
    assert np.array_equal(out, augment.random_d4(tf.constant(images), seed).numpy())
