"""The GAN's science monitors: real patches score about 1, wrong ones far above it."""
import dataclasses

import numpy as np
import pytest

from cosmotrain.data import cmb_spectrum
from cosmotrain.errors import UserError
from cosmotrain.science import monitors, spectra
from reference import gaussian_patches

SIDE, RESO = 32, 8.0  # 4.3 deg patches, like the tiny CMB set but quicker to simulate
CFG = monitors.MonitorConfig(generated=512, group_size=16, reference=512, ks_draws=8, pixels_per_patch=32)


def gaussian_sky(n: int, seed: int) -> np.ndarray:
    """``n`` flat-sky patches of the Planck 2018 spectrum with a 10' beam, float32 [n, 32, 32] μK."""
    cl = cmb_spectrum.load_spectrum(cmb_spectrum.SpectrumConfig()).cl[:2001]
    beamed = cl * spectra.beam_window(2000, 10.0) ** 2
    return gaussian_patches(beamed, n, (SIDE, SIDE), RESO, np.random.default_rng(seed)).astype(np.float32)


@pytest.fixture(scope="module")
def reference():
    real = gaussian_sky(CFG.reference + 2 * CFG.generated, seed=1)
    return monitors.build_reference(real[:CFG.reference], real[CFG.reference:], RESO, 2000, CFG)


def evaluate(reference, patches):
    one_process = (lambda total: total, lambda obj: [obj])  # dist.allreduce_sum_array, gather_object on 1 rank
    local = reference.probe.measure(patches, keep_examples=True)
    return monitors.score(reference, monitors.combine(local, *one_process))


def test_real_patches_score_about_one(reference):
    result = evaluate(reference, gaussian_sky(CFG.generated, seed=2))
    assert 0.7 < result["cl_error_over_floor"] < 1.6, result["cl_ratio"]
    assert 0.8 < np.median(np.asarray(result["cl_ratio"])[result["valid"]]) < 1.25
    assert 0.3 < result["ks_over_floor"] < 2.0
    assert all(result[f"mf_{n}_over_floor"] < 2.0 for n in monitors.FUNCTIONALS)
    assert 0.8 < result["variance_ratio"] < 1.25
    assert monitors.collapse_message(result, CFG.collapse_fraction) is None


def test_white_noise_scores_far_above_one(reference):
    sigma = float(np.asarray(reference.ref.examples).std())
    noise = np.random.default_rng(3).standard_normal((CFG.generated, SIDE, SIDE)).astype(np.float32) * sigma
    result = evaluate(reference, noise)
    assert result["cl_error_over_floor"] > 50
    assert result["mf_v2_over_floor"] > 10  # white noise has many more hot and cold spots
    assert result["score"] > 30


def test_a_five_percent_amplitude_error_is_caught(reference):
    result = evaluate(reference, 1.05 * gaussian_sky(CFG.generated, seed=2))
    assert result["cl_error_over_floor"] > 2.0  # 10 % too much power in every bin
    assert np.all(np.asarray(result["cl_rel_error"])[result["valid"]] > 0.05)


def test_a_wider_pixel_distribution_is_caught_by_ks(reference):
    result = evaluate(reference, 1.3 * gaussian_sky(CFG.generated, seed=2))
    assert result["ks_over_floor"] > 3.0


def test_a_collapsed_generator_gets_a_warning(reference):
    one = gaussian_sky(1, seed=4)
    result = evaluate(reference, np.repeat(one, CFG.generated, axis=0))
    assert result["variance_ratio"] < 0.05
    assert "mode collapse" in monitors.collapse_message(result, CFG.collapse_fraction)
    assert result["cl_error_over_floor"] > 3.0


def test_too_small_a_dataset_for_the_monitors_is_a_clear_error():
    with pytest.raises(UserError, match="monitor.reference"):
        monitors.check_config(CFG, n_train=600, n_val=600, size=2)
    with pytest.raises(UserError, match="validation split"):
        monitors.check_config(CFG, n_train=6000, n_val=0, size=2)


def test_an_unknown_calibration_reading_names_the_two_there_are():
    with pytest.raises(UserError, match="monitor.calibration_reading must be 'laplacian' or 'hann', got 'sharp'"):
        monitors.check_config(dataclasses.replace(CFG, calibration_reading="sharp"), n_train=6000, n_val=600, size=2)
    with pytest.raises(UserError, match="monitor.final_calibration_factor must be >= 1"):
        monitors.check_config(dataclasses.replace(CFG, final_calibration_factor=0), n_train=6000, n_val=600, size=2)


def test_too_little_scatter_scores_worse_than_real_patches(reference):
    """Two-sided: a set whose patches all have the mean's power (band-power scatter shrunk) is not rewarded."""
    real = gaussian_sky(CFG.generated, seed=2)
    f = np.fft.fft2(real)
    k = np.fft.fftfreq(SIDE) * SIDE
    ring = np.floor(np.hypot(k[:, None], k[None, :])).astype(int)
    for r in range(1, ring.max() + 1):
        sel = ring == r
        power = (np.abs(f[:, sel]) ** 2).mean(axis=1, keepdims=True)
        f[:, sel] *= np.sqrt((power.mean() + 0.3 * (power - power.mean())) / power)  # scatter x 0.55
    shrunk = np.real(np.fft.ifft2(f)).astype(np.float32)
    assert evaluate(reference, shrunk)["cl_error_over_floor"] > 1.5 * evaluate(reference, real)["cl_error_over_floor"]


@pytest.fixture(scope="module")
def skies_of_a_split():
    """10 simulated skies (the real sky code) of 768 patches of 32x32 at 8': 2 val, 6 train, 2 test."""
    from cosmotrain.data import sky

    cl = sky.map_spectrum(cmb_spectrum.load_spectrum(cmb_spectrum.SpectrumConfig()).cl, 1024, 1600, 10.0, True)
    where = sky.patch_locations(sky.patch_centers(8), (SIDE, SIDE), RESO)
    return [sky.simulate_patches(cl, where, (SIDE, SIDE), RESO, 0.0, 31, i) for i in range(10)]


def test_held_out_skies_meet_the_ks_goal_90_percent_of_the_time(skies_of_a_split):
    """The floors come from training skies against the validation skies; 200 sets of N patches of two
    test skies meet the KS goal >= 90 % of the time (a binomial σ of 2 % at 90 %)."""
    val, train, test = (np.concatenate(skies_of_a_split[a:b]) for a, b in ((0, 2), (2, 8), (8, 10)))
    rng = np.random.default_rng(0)
    reference = monitors.build_reference(val[rng.choice(len(val), CFG.reference, replace=False)],
                                         train[rng.permutation(len(train))[:8 * CFG.generated]], RESO, 1600, CFG)
    ks = np.array([evaluate(reference, test[rng.choice(len(test), CFG.generated, replace=False)])["ks_over_floor"]
                   for _ in range(200)])
    print("held-out KS/floor: median", np.median(ks), "p90", np.percentile(ks, 90), "met", np.mean(ks <= CFG.ks_goal))
    assert np.mean(ks <= CFG.ks_goal) >= 0.9
