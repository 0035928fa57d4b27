"""The GAN trainer on 2 real Open MPI ranks: identical networks after a step, exact resume."""
import json

import numpy as np
import pytest

from testlib import run_cli, run_mpi_python, toy_cmb

pytestmark = pytest.mark.mpi

# 32x32 patches, small networks, 8 steps of 2 ranks x 8 patches; monitors on 32 patches.
TINY = ["model.image_size=32", "model.latent_dim=16", "model.g_filters=32", "model.d_filters=8",
        "train.batch_size=8", "train.log_every=2", "train.checkpoint_every=4", "train.label_flip=0.1", "train.ema=0.9",
        "train.spectrum_weight=1.0", "train.variance_weight=8.0",
        "monitor.every=4", "monitor.generated=32", "monitor.group_size=2", "monitor.reference=32",
        "monitor.ks_draws=2", "monitor.pixels_per_patch=16", "monitor.examples=2", "monitor.calibration_patches=64"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return toy_cmb(tmp_path_factory.mktemp("gan") / "cmb")


SYNC_TEMPLATE = """
import json
import numpy as np
import tensorflow as tf
from cosmotrain import config, dist
from cosmotrain.models.generator import Transform
from cosmotrain.science.rings import patch_ring_powers, ring_matrix
from cosmotrain.train import spectrum_loss
from cosmotrain.train.gan_config import GanConfig
from cosmotrain.train.gan_step import GanTrainer
from cosmotrain.train.randomness import seed_everything
from cosmotrain.train.replicas import weights_digest
ctx = dist.init_horovod()
cfg = config.load(GanConfig, None, %r)
seed_everything(cfg.train.seed + ctx.rank, True)  # on purpose: ranks start from different weights
rings = ring_matrix(32, 16)
real_net = np.random.default_rng(0).normal(0, 0.3, (16, 32, 32))
spectrum = spectrum_loss.SpectrumMatch(patch_ring_powers(real_net, rings), rings)
trainer = GanTrainer(cfg, Transform(0.0, 300.0), steps_per_epoch=10, spectrum=spectrum)
G, D = trainer.generator, trainer.discriminator
start = weights_digest(G.variables + D.variables)
rng = np.random.default_rng(ctx.rank)  # and see different real patches
for step in range(2):
    real = tf.constant(rng.normal(0, 100, (8, 32, 32)).astype(np.float32))
    trainer.train_step(real, tf.constant(step, tf.int64), tf.constant(False))
    trainer.after_first_step()
mine = {"start": start, "G": weights_digest(G.variables), "D": weights_digest(D.variables),
        "G_opt": weights_digest(trainer.g_optimizer.variables), "D_opt": weights_digest(trainer.d_optimizer.variables),
        "G_average": weights_digest(trainer.average.variables),
        "noise_keys": trainer.keys}
everyone = dist.allgather_object(mine)
if ctx.rank == 0:
    print("RESULT", json.dumps(everyone))
"""
SYNC = SYNC_TEMPLATE % (TINY,)


def test_after_distributed_steps_both_networks_are_identical_on_both_ranks():
    out = run_mpi_python(SYNC, np_=2, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT"))
    r0, r1 = json.loads(line[len("RESULT "):])
    assert r0["start"] != r1["start"]  # different initial weights...
    for part in ("G", "D", "G_opt", "D_opt", "G_average"):  # ...but one state after the broadcast and averaged steps
        assert r0[part] == r1[part], part
    assert r0["G"] != r0["start"]
    assert not set(r0["noise_keys"]) & set(r1["noise_keys"])  # each rank draws its own latents


def test_spectral_norm_and_r1_run_in_the_distributed_step_and_keep_the_ranks_identical():
    """D's power-iteration vectors and R1's second backward pass: still one state on both ranks."""
    extra = ["model.d_spectral_norm=true", "model.d_batchnorm=false", "train.r1_weight=1.0"]
    out = run_mpi_python(SYNC_TEMPLATE % (TINY + extra,), np_=2, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT"))
    r0, r1 = json.loads(line[len("RESULT "):])
    for part in ("G", "D", "G_opt", "D_opt", "G_average"):
        assert r0[part] == r1[part], part


def train(data, out, *extra):
    sets = [a for s in TINY for a in ("--set", s)]
    return run_cli("train", "gan", *sets, "--data", data, "--out", out, *extra, np_=2, timeout=300)


def test_a_resumed_two_rank_run_ends_bit_identical(data, tmp_path):
    whole = train(data, tmp_path / "whole", "--set", "train.steps=8")
    assert whole.returncode == 0, whole.stderr[-3000:]
    first = train(data, tmp_path / "split", "--set", "train.steps=4")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli("train", "gan", "--out", tmp_path / "split", "--resume", "--set", "train.steps=8", np_=2,
                     timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stderr
    changed = [line for line in second.stderr.splitlines() if "resuming with changed settings" in line]
    assert len(changed) == 1 and "[0/2] WARNING resuming with changed settings (train.steps 4 -> 8)" in changed[0]
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((tmp_path / "split" / "metrics.json").read_text())
    assert a["weights_identical_across_ranks"] and b["weights_identical_across_ranks"]
    assert a["weights_sha256"] == b["weights_sha256"]
    assert a["cl_error_over_floor"] == b["cl_error_over_floor"]
    assert a["final"]["calibration_gains"] == b["final"]["calibration_gains"]  # the calibration filter too
    rows_a = (tmp_path / "whole" / "history.csv").read_text().splitlines()
    rows_b = (tmp_path / "split" / "history.csv").read_text().splitlines()
    loss = slice(0, 8)  # step, epoch, d_loss, g_loss, d_real, d_fake, g_spectrum, g_morphology
    assert [r.split(",")[loss] for r in rows_a] == [r.split(",")[loss] for r in rows_b]


def test_two_ranks_fit_the_calibration_filter_one_process_would_fit(data, tmp_path):
    """Each rank makes half of the filter's patches and the ring powers are added over ranks: the
    gains a sampler loads are those one process fits on all 64 patches. The spectrum term reads
    sectors of rings and the prewhitened patches; the filter still fits whole rings."""
    from cosmotrain import config
    from cosmotrain.data import reader
    from cosmotrain.inference import load_generator
    from cosmotrain.science import calibration, rings
    from cosmotrain.train import gan_config, gan_monitor

    out = train(data, tmp_path / "run", "--set", "train.steps=4", "--set", "train.spectrum_sectors=3",
                "--set", "train.spectrum_prewhiten=true")
    assert out.returncode == 0, out.stderr[-3000:]
    generator = load_generator(tmp_path / "run", "latest")
    dim = generator.latent_dim
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    np.testing.assert_array_equal(generator.gains, metrics["final"]["calibration_gains"])
    cfg = config.load(gan_config.GanConfig, str(tmp_path / "run" / "config.yaml"), [])
    split = reader.ShardSet(cfg.data.path, cfg.data.train_split, kind="cmb")
    real = gan_monitor.monitor_patches(split, cfg.monitor)
    measured = gan_monitor.real_rings(cfg, real, generator.transform, split.attrs)
    target, whitened = gan_monitor.calibration_target(cfg, measured)  # the referee's reading from ring 2 on
    by_sector = rings.column_rings(measured.term_matrix)
    assert len(target) == len(whitened) == len(set(by_sector)) and measured.term_powers.shape[1] > 2 * len(target)
    z = np.random.default_rng([cfg.monitor.seed, 5]).standard_normal((64, dim)).astype(np.float32)
    np.testing.assert_allclose(generator.gains, calibration.fit(generator.network(z), target, whitened=whitened),
                               rtol=1e-5)
    assert np.ptp(generator.gains) > 0.1  # a 4-step G is far off: a real fit, not the identity
