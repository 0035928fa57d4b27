"""The figures say what they show: titles, log axes where the field uses them, goal lines, legends that match.

Built from real monitor results (``science.monitors`` on smooth Gaussian patches) and real
history files, then inspected as matplotlib objects.
"""
import csv

import matplotlib
import numpy as np
import pytest

from cosmotrain.plots import classification, pixels, spectra, training
from cosmotrain.science import monitors

matplotlib.use("Agg")


def smooth_patches(n: int, seed: int, amplitude: float = 100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = np.fft.rfftfreq(32)[None, :] ** 2 + np.fft.fftfreq(32)[:, None] ** 2
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((n, 32, 32))) * np.exp(-k / 0.01), s=(32, 32))
    return amplitude * field / 0.05


@pytest.fixture(scope="module")
def monitor_result():
    cfg = monitors.MonitorConfig(generated=32, group_size=4, reference=32, ks_draws=2, pixels_per_patch=16,
                                 examples=2, min_modes=100)
    reference = monitors.build_reference(smooth_patches(32, 0), smooth_patches(64, 1), 8.0, None, cfg)
    generated = reference.probe.measure(smooth_patches(32, 2, amplitude=120.0), keep_examples=True)
    total = monitors.combine(generated, lambda a: a, lambda o: [o])
    return {**monitors.score(reference, total), "step": 40}


def legend_labels(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_gan_spectra_log_d_ell_above_a_linear_error_panel_with_its_goal(monitor_result):
    assert not all(monitor_result["valid"])  # min_modes leaves the lowest bins unscored
    figure = spectra.run_spectra(monitor_result, 1.2, "runs/gan at step 40", theory=np.asarray(
        monitor_result["cl_real"]))
    top, bottom = figure.axes
    assert top.get_yscale() == "log" and bottom.get_yscale() == "linear"
    assert top.get_ylabel().startswith("$D_\\ell") and "runs/gan at step 40" in top.get_title()
    assert any("theory" in label for label in legend_labels(top))
    goals = [line for line in bottom.get_lines() if "goal" in line.get_label()]
    assert len(goals) == 1 and set(goals[0].get_ydata()) == {1.2}
    assert bottom.get_ylim()[0] == 0 and bottom.get_ylim()[1] > 1.2
    assert "not scored (too few modes)" in legend_labels(bottom)


def test_a_legend_lists_only_what_is_drawn(monitor_result):
    everything_scored = {**monitor_result, "valid": [True] * len(monitor_result["valid"])}
    bottom = spectra.run_spectra(everything_scored, 1.2, "run").axes[1]
    assert not any("not scored" in label for label in legend_labels(bottom))


def test_minkowski_functionals_have_units_and_pixel_pdf_a_log_axis(monitor_result):
    figure = pixels.minkowski(monitor_result, "runs/gan", reso_arcmin=8.0)
    assert [ax.get_ylabel().split(":")[0] for ax in figure.axes] == ["$V_0$", "$V_1$", "$V_2$"]
    assert "deg$^{-1}$" in figure.axes[1].get_ylabel() and "deg$^{-2}$" in figure.axes[2].get_ylabel()
    assert "runs/gan" in figure._suptitle.get_text()
    pdf = pixels.pixel_pdf(monitor_result, "runs/gan").axes[0]
    assert pdf.get_yscale() == "log" and "\\mu" in pdf.get_xlabel() and "runs/gan" in pdf.get_title()


def write_history(path, columns, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_gan_losses_show_d_outputs_balanced_lines_and_the_goals(tmp_path):
    columns = ["step", "d_loss", "g_loss", "d_real", "d_fake", "g_spectrum", "score", "cl_error_over_floor",
               "ks_over_floor"]
    rows = [{"step": s, "d_loss": 1.2, "g_loss": 0.8, "d_real": 0.7, "d_fake": 0.3, "g_spectrum": 0.0,
             "score": 1.5 if s % 20 == 0 else "", "cl_error_over_floor": 1.4 if s % 20 == 0 else "",
             "ks_over_floor": 1.1 if s % 20 == 0 else ""} for s in range(10, 50, 10)]
    figure = training.gan_losses(write_history(tmp_path / "history.csv", columns, rows), "runs/gan", 1.2, 1.5, 20)
    losses, outputs, scores = figure.axes
    assert {"$D(x)$: D's mean output on real patches", "$D(G(z))$: on generated patches"} <= set(legend_labels(outputs))
    balanced = {line.get_label(): line.get_ydata()[0] for line in losses.get_lines() if "balanced" in line.get_label()}
    assert balanced == {"$J_D = 2\\ln 2$ (balanced)": pytest.approx(2 * np.log(2)),
                        "$J_G = \\ln 2$ (balanced)": pytest.approx(np.log(2))}
    goal_levels = {line.get_ydata()[0] for line in scores.get_lines() if "goal" in line.get_label()}
    assert goal_levels == {1.2, 1.5}
    assert "runs/gan" in losses.get_title()


def test_classifier_curves_count_whole_epochs_and_show_the_learning_rate(tmp_path):
    columns = ["epoch", "step", "lr", "loss", "accuracy", "val_loss", "val_accuracy"]
    rows = [{"epoch": e, "step": 10 * e, "lr": 1e-3 / e, "loss": 1 / e, "accuracy": 1 - 0.5 / e, "val_loss": 1.1 / e,
             "val_accuracy": 1 - 0.6 / e} for e in (1, 2, 3)]
    figure = training.classifier_curves(write_history(tmp_path / "history.csv", columns, rows), "runs/clf", 3)
    loss, accuracy, rate = figure.axes
    figure.canvas.draw()
    for ax in figure.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    assert rate.get_yscale() == "log" and rate.get_ylabel() == "learning rate"
    assert "runs/clf" in figure._suptitle.get_text()


def test_the_confusion_matrix_names_what_was_evaluated():
    title = "runs/clf: test split of galaxies, best checkpoint ckpt-48 (epoch 2), D4 test-time augmentation"
    figure = classification.confusion(np.array([[5, 1, 0], [0, 6, 0], [1, 0, 5]]), ["round", "edge-on", "spiral"],
                                      title)
    assert figure.axes[0].get_title().startswith(title) and "accuracy 0.889 on 18 images" in figure.axes[0].get_title()
