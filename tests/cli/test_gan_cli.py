"""`cosmotrain train gan` end to end, as a user runs it (one process): outputs, SIGUSR1, bad input."""
import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from testlib import BIN, REPO, mpi_env, run_cli, tensorboard_scalars, toy_cmb

# configs/gan_tiny.yaml made smaller still: 32x32 patches, narrow networks, 6 steps.
SMALL = ("model.image_size=32", "model.latent_dim=16", "model.g_filters=32", "model.d_filters=8", "train.batch_size=8",
         "train.steps=6", "train.log_every=2", "train.checkpoint_every=2", "monitor.every=3", "monitor.generated=32",
         "monitor.group_size=2", "monitor.reference=32", "monitor.ks_draws=2", "monitor.pixels_per_patch=16",
         "monitor.examples=3", "monitor.calibration_patches=256")
TINY = ["--config", str(REPO / "configs" / "gan_tiny.yaml")] + [a for s in SMALL for a in ("--set", s)]


def train(data, out, *extra, **kw):
    return run_cli("train", "gan", *TINY, "--data", data, "--out", out, *extra, timeout=300, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 6-step run: (dataset, run, completed process)."""
    base = tmp_path_factory.mktemp("gan")
    data = toy_cmb(base / "cmb")
    out = train(data, base / "run")
    assert out.returncode == 0, out.stderr[-3000:]
    return data, base / "run", out


def test_training_writes_history_checkpoints_metrics_and_plots(trained):
    data, run, out = trained
    assert str(data) in (run / "config.yaml").read_text()
    header, *rows = (run / "history.csv").read_text().splitlines()
    assert header.startswith("step,epoch,d_loss,g_loss,d_real,d_fake,g_spectrum,g_morphology,lr,steps_per_s,seconds,"
                             "score,cl_error_over_floor,ks_over_floor")
    assert [r.split(",")[0] for r in rows] == ["2", "3", "4", "6"]  # logs every 2 steps, monitors at 3 and 6
    assert list((run / "checkpoints").glob("ckpt-6.index")) and list((run / "checkpoints" / "best").glob("*.index"))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("cl_error_over_floor", "ks_over_floor", "score"):
        assert metrics[key] > 0 and metrics["final"][key] == metrics[key]
    assert metrics["best_step"] in (3, 6) and metrics["best_by"] == "referee"
    nbins = len(metrics["final"]["ell"])
    assert nbins >= 3 and len(metrics["final"]["cl_ratio"]) == len(metrics["final"]["valid"]) == nbins
    assert metrics["cl_error_over_floor"] == max(r for r, v in zip(metrics["final"]["cl_ratio"],
                                                                   metrics["final"]["valid"]) if v)
    plots = {Path(p).name for p in metrics["plots"]}
    assert plots == {"samples.png", "spectra.png", "pixel_pdf.png", "minkowski.png", "losses.png"}
    assert all((run / "plots" / p).stat().st_size > 10_000 for p in plots)
    assert "monitor at step 3" in out.stderr and "C_ell error/floor worst" in out.stderr


def test_the_best_checkpoint_is_the_one_the_referee_liked_best_on_the_validation_skies(trained):
    """Best = the lowest referee badness on the validation split at a monitor step, not the monitors' score."""
    from cosmotrain.inference import load_generator
    _, run, out = trained
    header, *rows = (run / "history.csv").read_text().splitlines()
    columns = header.split(",")
    monitored = [dict(zip(columns, r.split(","))) for r in rows if r.split(",")[columns.index("score")]]
    badness = {int(r["step"]): float(r["referee_badness"]) for r in monitored}
    assert sorted(badness) == [3, 6] and all(int(r["referee_failed"]) >= 0 for r in monitored)
    metrics = json.loads((run / "metrics.json").read_text())
    best = min(badness, key=lambda s: (badness[s], -s))  # a tie goes to the later checkpoint
    assert metrics["best_step"] == best and load_generator(run, "best").info["step"] == best
    assert metrics["best"]["referee_badness"] == min(badness.values())
    assert "referee at step 3 against the validation skies: badness" in out.stderr
    assert set(metrics["final"]["referee_p"]) == {"band_powers", "rings", "scatter", "one_point", "pixel_pdf",
                                                  "minkowski", "memorisation", "diversity"}


def test_the_best_checkpoint_can_still_be_chosen_by_the_monitors(trained, tmp_path):
    data, _, _ = trained
    out = train(data, tmp_path / "run", "--set", "monitor.best_by=monitors")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["best_by"] == "monitors" and metrics["best"]["score"] <= metrics["final"]["score"]
    assert "referee_badness" not in metrics["best"]
    bad = train(data, tmp_path / "bad", "--set", "monitor.best_by=luck")
    assert bad.returncode == 2 and "monitor.best_by must be 'referee' or 'monitors'" in bad.stderr


def test_bench_gan_quality_counts_referee_passes_per_test_for_final_and_best(trained):
    """The benchmark's judging on a real run: the same latent sets for both checkpoints, shares in [0, 1]."""
    from cosmotrain.bench.gan_quality import judge_run
    data, run, _ = trained
    judged = judge_run(run, data, "val", sets=3, size=16)
    assert judged["final"]["step"] == 6 and judged["best"]["step"] == json.loads(
        (run / "metrics.json").read_text())["best_step"]
    for which in ("final", "best"):
        for filt in ("filtered", "unfiltered"):
            rates = judged[which][filt]
            assert set(rates["tests"]) == set(rates["median_p"]) and len(rates["tests"]) == 8
            assert all(r in (0.0, 1 / 3, 2 / 3, 1.0) for r in [rates["all"], *rates["tests"].values()])
            assert rates["all"] <= min(rates["tests"].values())
    assert judged["final"]["filtered"]["all"] == 0.0  # 6 steps of training are far from the sky: no set passes
    assert [line["side"] for line in judged["nyquist_lines"]] == [8, 16]
    badness = judged["validation_badness"]  # the run's course: one entry per monitor, as the checkpoint choice saw it
    assert sorted(badness) == [3, 6] and min(badness.values()) == pytest.approx(json.loads(
        (run / "metrics.json").read_text())["best"]["referee_badness"], abs=1e-3)


def test_tensorboard_groups_the_scalars_and_names_each_bin_by_its_ell(trained):
    _, run, _ = trained
    board = tensorboard_scalars(run / "tensorboard")
    assert {tag.split("/")[0] for tag in board} == {"train", "monitor"}
    assert {"train/discriminator_loss", "train/generator_loss", "train/D(x)", "train/D(G(z))", "train/learning_rate",
            "monitor/score", "monitor/cl_error_over_floor_worst_bin", "monitor/ks_over_floor"} <= set(board)
    final = json.loads((run / "metrics.json").read_text())["final"]
    for ell, ratio in zip(final["ell"], final["cl_ratio"]):
        assert board[f"monitor/cl_error_over_floor_by_bin/ell_{ell:04.0f}"][6] == pytest.approx(ratio)
    assert board["monitor/score"][6] == pytest.approx(final["score"])


def test_load_generator_gives_uK_patches_and_the_checkpoint_hash(trained):
    from cosmotrain.checkpoints import digest
    from cosmotrain.inference import load_generator
    from cosmotrain.science import calibration

    _, run, _ = trained
    generator = load_generator(run, checkpoint="latest")
    dim, sha = generator.latent_dim, generator.sha256
    z = np.random.default_rng(0).standard_normal((5, dim)).astype(np.float32)
    patches = generator(z)
    assert dim == 16 and patches.shape == (5, 32, 32) and patches.dtype == np.float32
    transform = generator.info["transform"]  # fitted on the ~100 μK rms training patches
    assert 400 < transform["scale_uK"] < 600  # data.scale_sigmas = 5
    net = calibration.apply(generator.model(z, training=False).numpy(), generator.gains)  # G, then its calibration filter
    assert np.allclose(patches, net * transform["scale_uK"] + transform["offset_uK"], rtol=1e-5, atol=1e-3)
    assert generator.info["calibration_gains"] == json.loads((run / "metrics.json").read_text())["final"][
        "calibration_gains"]  # the final monitor's filter: the sampler makes what it scored
    assert np.array_equal(generator(z[:2]), patches[:2])  # a patch depends on its own z only
    assert generator.checkpoint.endswith("ckpt-6") and sha == digest(generator.checkpoint)
    assert generator.info["dataset"]["reso_arcmin"] == 8.0
    best = load_generator(run)  # default: the best checkpoint by monitor score
    assert "best" in best.checkpoint and len(best.sha256) == 64


def test_sigusr1_checkpoints_exits_75_and_resume_finishes(trained, tmp_path):
    data, _, _ = trained
    run = tmp_path / "run"
    cmd = [str(BIN / "cosmotrain"), "train", "gan", *TINY, "--set", "train.steps=100000", "--data", str(data),
           "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mpi_env(),
                            cwd=REPO)
    deadline = time.monotonic() + 240
    while not list((run / "checkpoints").glob("ckpt-*.index")) and time.monotonic() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-3000:]
    assert "SIGUSR1: checkpointed" in err
    resumed = run_cli("train", "gan", "--out", run, "--resume", "--set", "train.steps=12", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    assert json.loads((run / "metrics.json").read_text())["steps"] == 12


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(trained, tmp_path):
    _, done, _ = trained
    run = tmp_path / "run"
    shutil.copytree(done, run)
    out = run_cli("train", "gan", "--out", run, "--resume", "--set", "train.steps=12",
                  "--set", "g_optimizer.base_lr=1.0e+30", "--set", "d_optimizer.base_lr=1.0e+30", timeout=300)
    assert out.returncode == 2
    assert "loss became NaN/inf at step" in out.stderr
    assert "ckpt-6 is kept" in out.stderr
    assert sorted(p.name for p in (run / "checkpoints").glob("ckpt-*.index"))[-1] == "ckpt-6.index"


def test_a_dataset_whose_patches_do_not_fit_the_model_is_refused(tmp_path):
    data = toy_cmb(tmp_path / "cmb16", side=16)
    out = train(data, tmp_path / "run")
    assert out.returncode == 2
    lines = [l for l in out.stderr.splitlines() if "error:" in l]
    assert len(lines) == 1 and "16x16 patches but model.image_size is 32" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_dataset_without_pixel_size_is_refused(tmp_path):
    data = toy_cmb(tmp_path / "cmb", attrs={"nside": 512, "seed": 0})
    out = train(data, tmp_path / "run")
    assert out.returncode == 2 and "lacks a positive 'reso_arcmin'" in out.stderr


def test_train_gan_is_listed_and_documented():
    out = run_cli("train", "gan", "--help")
    assert out.returncode == 0 and "--resume" in out.stdout and "SIGUSR1" in out.stdout


def test_the_referee_config_trains_and_samples_through_the_filter_its_monitors_fitted(trained, tmp_path):
    """configs/gan_referee.yaml (bench gan-quality's) at 32x32: canvas 40 = 5·2^3, so a margin of 4."""
    from cosmotrain.inference import load_generator
    data, _, _ = trained
    small = [a for s in (*SMALL, "model.margin=4", "model.crop_reach=3") for a in ("--set", s)]
    out = run_cli("train", "gan", "--config", REPO / "configs" / "gan_referee.yaml", *small, "--data", data,
                  "--out", tmp_path / "run", timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "morphology_weight: 50.0" in saved and "spectrum_periodic: true" in saved and "crop: random" in saved
    header, *rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    morphology = [float(r.split(",")[header.split(",").index("g_morphology")]) for r in rows]
    assert all(m > 0 for m in morphology) and "morphology" in out.stderr  # the term's value is logged
    fitted = re.findall(r"monitor at step \d+ \([\d.]+ s; filter fitted on (\d+) patches\)", out.stderr)
    assert fitted[:-1] == ["256"] * (len(fitted) - 1) and fitted[-1] == "2048"  # final_calibration_factor: 8
    generator = load_generator(tmp_path / "run", "latest")
    assert generator.gains is not None and not np.allclose(generator.gains, 1.0)  # fitted at the last monitor
    z = np.random.default_rng(0).standard_normal((4, generator.latent_dim)).astype(np.float32)
    assert generator(z).shape == (4, 32, 32)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["best_by"] == "referee"
