"""G's optional power-spectrum term: what it measures and how it pulls."""
import numpy as np
import pytest
import tensorflow as tf

from cosmotrain.config import ConfigError
from cosmotrain.science import spectra
from cosmotrain.train import gan, spectrum_loss


def gaussian_field(n, size, slope, seed):
    """n patches of a Gaussian random field with P(k) ∝ k^-slope (network-like units)."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(size) * size
    kk = np.hypot(k[:, None], k[None, :])
    amplitude = np.where(kk > 0, np.maximum(kk, 1e-9) ** (-slope / 2), 0.0)
    noise = np.fft.fft2(rng.standard_normal((n, size, size)))
    return np.fft.ifft2(noise * amplitude).real.astype(np.float32)


def term(target_patches, patches, rings=16):
    size = patches.shape[-1]
    target = spectrum_loss.ring_powers(target_patches, spectrum_loss.ring_matrix(size, rings))
    return float(spectrum_loss.SpectrumMatch(target, size)(tf.constant(patches)))


def test_rings_2_to_K_average_their_modes_and_leave_out_the_largest_scales():
    matrix = spectrum_loss.ring_matrix(32, 16)
    assert matrix.shape == (32 * 32, 15)
    np.testing.assert_allclose(matrix.sum(axis=0), 1.0)
    k = np.fft.fftfreq(32) * 32
    ring = np.rint(np.hypot(k[:, None], k[None, :])).ravel()
    assert not matrix[ring < 2].any() and not matrix[ring > 16].any()


def test_edge_jumps_do_not_count_as_small_scale_power():
    """A smooth ramp has a big jump where the FFT wraps around; the window hides it."""
    size = 32
    ramp = np.broadcast_to(np.linspace(-1, 1, size), (4, size, size))
    smooth = gaussian_field(4, size, 4.0, seed=7)
    matrix = spectrum_loss.ring_matrix(size, 16)
    high = slice(8, None)  # rings 10..16
    with_ramp = spectrum_loss.ring_powers(smooth + ramp, matrix)[high]
    np.testing.assert_allclose(with_ramp, spectrum_loss.ring_powers(smooth, matrix)[high], rtol=0.1)

    def unapodised(x):
        return (np.abs(np.fft.fft2(x)) ** 2).reshape(len(x), -1).mean(0) @ matrix

    assert np.all(unapodised(smooth + ramp)[high] > 2 * unapodised(smooth)[high])  # what the window is for


def test_ring_count_stops_at_nyquist_or_lmax():
    assert spectrum_loss.ring_count(64, 4.0, None) == 32
    assert spectrum_loss.ring_count(64, 4.0, 1.0) == 2
    base = spectra.fundamental_ell((64, 64), 4.0)
    assert spectrum_loss.ring_count(64, 4.0, 10.5 * base) == 10


def test_a_batch_scaled_by_a_scores_log_a_squared_squared_more():
    x = gaussian_field(32, 32, 2.0, seed=1)
    # every ring's power scales by a², the scatter term does not change: S rises by (log a²)²
    assert term(x, 1.5 * x) - term(x, x) == pytest.approx(np.log(1.5 ** 2) ** 2, rel=1e-4)


def test_the_sample_variance_of_a_batch_is_taken_out():
    """Real batches score ~0 on average, so shrinking the patch-to-patch scatter gains nothing."""
    real = gaussian_field(2048, 32, 2.0, seed=8)
    matrix = spectrum_loss.ring_matrix(32, 16)
    target = spectrum_loss.ring_powers(real[:1024], matrix)
    batches = real[1024:].reshape(32, 32, 32, 32)
    plain = np.mean([np.mean(np.log(spectrum_loss.ring_powers(b, matrix) / target) ** 2) for b in batches])
    corrected = np.mean([term(real[:1024], b) for b in batches])
    assert plain > 0.002 and abs(corrected) < 0.2 * plain


def test_the_right_spectrum_scores_near_its_noise_and_white_noise_far_above():
    real = gaussian_field(512, 32, 2.0, seed=2)
    same_law = gaussian_field(32, 32, 2.0, seed=3)
    white = np.random.default_rng(4).standard_normal((32, 32, 32)).astype(np.float32) * real.std()
    assert term(real, same_law) < 0.05
    assert term(real, white) > 100 * term(real, same_law)


def test_its_gradient_moves_a_patch_towards_the_target_spectrum():
    real = gaussian_field(256, 32, 2.0, seed=5)
    x = tf.Variable(0.5 * gaussian_field(16, 32, 2.0, seed=6))
    target = spectrum_loss.ring_powers(real, spectrum_loss.ring_matrix(32, 16))
    match = spectrum_loss.SpectrumMatch(target, 32)
    before = float(match(x))
    for _ in range(50):
        with tf.GradientTape() as tape:
            loss = match(x)
        x.assign_sub(0.5 * tape.gradient(loss, x))
    assert float(match(x)) < 0.1 * before


def test_a_negative_weight_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="train.spectrum_weight"):
        gan._check(gan.GanConfig(train=gan.TrainConfig(spectrum_weight=-1.0)))
