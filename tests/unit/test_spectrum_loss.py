"""G's optional power-spectrum term: what it measures and how it pulls."""
import numpy as np
import pytest
import tensorflow as tf

from cosmotrain.config import ConfigError
from cosmotrain.science import referee_features, rings, spectra
from cosmotrain.train import gan_config, spectrum_loss
from testlib import mean_ring_powers


def gaussian_field(n, size, slope, seed):
    """n patches of a Gaussian random field with P(k) ∝ k^-slope (network-like units)."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(size) * size
    kk = np.hypot(k[:, None], k[None, :])
    amplitude = np.where(kk > 0, np.maximum(kk, 1e-9) ** (-slope / 2), 0.0)
    noise = np.fft.fft2(rng.standard_normal((n, size, size)))
    return np.fft.ifft2(noise * amplitude).real.astype(np.float32)


def term(target_patches, patches, top=16):
    matrix = rings.ring_matrix(patches.shape[-1], top)
    powers = rings.patch_ring_powers(target_patches, matrix)
    return float(spectrum_loss.SpectrumMatch(powers, matrix)(tf.constant(patches)))


def boost_ring(patches, ring, factor):
    """patches with the power of the modes k <= |k| < k + 1 multiplied by factor."""
    k = np.fft.fftfreq(patches.shape[-1]) * patches.shape[-1]
    modulus = np.hypot(k[:, None], k[None, :])
    gain = np.where((modulus >= ring) & (modulus < ring + 1), np.sqrt(factor), 1.0)
    return np.fft.ifft2(np.fft.fft2(patches) * gain).real.astype(np.float32)


def modulated(patches, amplitude, seed):
    """Each patch scaled by (1 + a·g)/√(1 + a²), g ~ N(0, 1): the same mean power, more scatter between patches."""
    g = np.random.default_rng(seed).standard_normal((len(patches), 1, 1))
    return (patches * (1.0 + amplitude * g) / np.sqrt(1.0 + amplitude**2)).astype(np.float32)


def test_rings_0_to_K_average_their_modes_and_nothing_beyond():
    matrix = rings.ring_matrix(32, 16)
    assert matrix.shape == (32 * 32, 17)
    np.testing.assert_allclose(matrix.sum(axis=0), 1.0)
    assert matrix[0, 0] == 1.0  # ring 0 is the (window-weighted) patch mean alone
    k = np.fft.fftfreq(32) * 32
    modulus = np.hypot(k[:, None], k[None, :]).ravel()
    assert (matrix > 0).sum(axis=1).max() == 1 and not matrix[modulus >= 17].any()
    assert matrix[modulus == 16, 16].all() and matrix[(modulus > 16) & (modulus < 17), 16].all()


def test_every_monitor_bin_is_a_union_of_rings():
    """Matching the rings matches the band powers the C_ell monitor scores, bin by bin."""
    size, reso = 64, 4.0
    top = rings.top_wavenumber(size, reso, 2047)
    matrix = rings.ring_matrix(size, top)
    binning = spectra.make_binning((size, size), reso, spectra.default_edges((size, size), reso, 2047))
    rfft_columns = np.arange(size // 2 + 1)
    ring = matrix.reshape(size, size, -1)[:, rfft_columns].argmax(axis=-1)  # the ring of each rfft2 mode
    in_bin = np.digitize(binning.mode_ell, binning.edges) - 1
    for b in range(binning.nbins):
        np.testing.assert_array_equal(binning.in_bins & (in_bin == b), np.isin(ring, [2 * b + 2, 2 * b + 3]))


def test_the_scatter_of_patch_means_counts():
    x = gaussian_field(64, 32, 2.0, seed=9)
    offsets = np.random.default_rng(10).normal(0, 3 * x.std(), (64, 1, 1)).astype(np.float32)
    # right small scales, too little scatter of the means: ring 0 (1 of 17) is ~100 % short;
    # a single mode scatters a lot between patches, so it weighs little, but it counts
    assert term(x + offsets, x) > 0.002
    assert term(x + offsets, x) > 3 * abs(term(x + offsets, x + offsets))


def test_edge_jumps_do_not_count_as_small_scale_power():
    """A smooth ramp has a big jump where the FFT wraps around; the window hides it."""
    size = 32
    ramp = np.broadcast_to(np.linspace(-1, 1, size), (64, size, size))
    smooth = gaussian_field(64, size, 4.0, seed=7)
    matrix = rings.ring_matrix(size, 16)
    k = np.fft.fftfreq(size) * size
    high = (matrix.T @ np.hypot(k[:, None], k[None, :]).ravel()) >= 10  # rings 10..16
    with_ramp = mean_ring_powers(smooth + ramp, matrix)[high].sum()
    assert with_ramp == pytest.approx(mean_ring_powers(smooth, matrix)[high].sum(), rel=0.05)

    def unapodised(x):
        return ((np.abs(np.fft.fft2(x)) ** 2).reshape(len(x), -1).mean(0) @ matrix)[high].sum()

    assert unapodised(smooth + ramp) > 2 * unapodised(smooth)  # what the window is for


def test_the_top_wavenumber_is_nyquist_or_lmax():
    assert rings.top_wavenumber(64, 4.0, None) == 32
    assert rings.top_wavenumber(64, 4.0, 1.0) == 2
    base = spectra.fundamental_ell((64, 64), 4.0)
    assert rings.top_wavenumber(64, 4.0, 10.5 * base) == 10


def test_a_batch_scaled_by_a_scores_its_relative_power_error_squared():
    x = gaussian_field(32, 32, 2.0, seed=1)
    # against its own spectrum a batch scores −(the real sample-variance term); scaled by a,
    # every ring's power is a² times larger: S = (a² − 1)² − that same term
    assert term(x, 1.5 * x) == pytest.approx((1.5 ** 2 - 1) ** 2 + term(x, x), rel=1e-4)
    assert term(x, x) < 0


def test_the_sample_variance_of_a_batch_is_taken_out():
    """Real batches score ~0 on average, so shrinking the patch-to-patch scatter gains nothing."""
    real = gaussian_field(2048, 32, 2.0, seed=8)
    matrix = rings.ring_matrix(32, 16)
    target = mean_ring_powers(real[:1024], matrix)
    batches = real[1024:].reshape(32, 32, 32, 32)
    plain = np.mean([np.mean((mean_ring_powers(b, matrix) / target - 1) ** 2) for b in batches])
    corrected = np.mean([term(real[:1024], b) for b in batches])
    assert plain > 0.002 and abs(corrected) < 0.2 * plain


def test_patches_that_scatter_more_than_real_ones_gain_nothing():
    """Loud and quiet patches with the right mean power cost more than real ones.

    With the batch's own scatter as the correction they cost nothing here (−0.0007 against
    0.0000), and where BatchNorm couples a training batch they gained: with λ = 100 a
    generator drove S to −7 and D won outright.
    """
    real = gaussian_field(2048, 32, 2.0, seed=33)
    matrix = rings.ring_matrix(32, 16)
    match = spectrum_loss.SpectrumMatch(rings.patch_ring_powers(real, matrix), matrix)
    batches = [gaussian_field(32, 32, 2.0, seed=400 + i) for i in range(50)]
    same_law = np.mean([float(match(b)) for b in batches])
    loud_and_quiet = np.mean([float(match(modulated(b, 0.5, i))) for i, b in enumerate(batches)])
    assert loud_and_quiet > same_law + 0.002


def test_the_right_spectrum_scores_near_its_noise_and_white_noise_far_above():
    real = gaussian_field(512, 32, 2.0, seed=2)
    same_law = gaussian_field(32, 32, 2.0, seed=3)
    white = np.random.default_rng(4).standard_normal((32, 32, 32)).astype(np.float32) * real.std()
    assert term(real, same_law) < 0.05
    assert term(real, white) > 100 * term(real, same_law)


def test_its_gradient_moves_a_patch_towards_the_target_spectrum():
    real = gaussian_field(256, 32, 2.0, seed=5)
    x = tf.Variable(0.5 * gaussian_field(16, 32, 2.0, seed=6))
    matrix = rings.ring_matrix(32, 16)
    match = spectrum_loss.SpectrumMatch(rings.patch_ring_powers(real, matrix), matrix, weighted=False)
    before = float(match(x))
    adam = tf.keras.optimizers.Adam(0.01)
    for _ in range(50):
        with tf.GradientTape() as tape:
            loss = match(x)
        adam.apply_gradients([(tape.gradient(loss, x), x)])
    assert float(match(x)) < 0.1 * before


def test_rings_that_real_patches_pin_down_count_more():
    """50 % too much power costs more in a ring of many modes (small scatter) than in one of few."""
    real = gaussian_field(1024, 32, 2.0, seed=13)
    batch = gaussian_field(256, 32, 2.0, seed=14)
    matrix = rings.ring_matrix(32, 16)
    weights = rings.ring_weights(rings.patch_ring_powers(real, matrix))
    assert weights[12] > 3 * weights[2]  # ~6x the modes, a few times less scatter
    few, many = term(real, boost_ring(batch, 2, 1.5)), term(real, boost_ring(batch, 12, 1.5))
    assert many > 3 * few > 0


def test_a_negative_weight_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="train.spectrum_weight"):
        gan_config.GanConfig(train=gan_config.TrainConfig(spectrum_weight=-1.0))


def test_rings_without_real_power_are_left_out_instead_of_overflowing():
    """A very smooth field has ~1e-20 of its power at high k; dividing by it would give inf."""
    k = np.fft.fftfreq(32)
    kk = k[:, None] ** 2 + k[None, :] ** 2
    noise = np.fft.fft2(np.random.default_rng(11).standard_normal((64, 32, 32)))
    smooth = np.fft.ifft2(noise * np.exp(-kk / 0.01)).real.astype(np.float32)
    rough = smooth + 0.01 * np.random.default_rng(12).standard_normal(smooth.shape).astype(np.float32)
    assert abs(term(smooth, smooth)) < 0.05  # float32 round-off in empty rings would give ~10
    assert 0.5 < term(smooth, rough) < 100  # the added small-scale noise, seen where there is real power


def cmb_like(n, seed):
    """32x32 patches with power on every scale and patch means that scatter (0.5 σ), like CMB cut-outs."""
    field = gaussian_field(n, 32, 2.0, seed)
    means = np.random.default_rng(seed).standard_normal((n, 1, 1)) * 0.5 * field.std()
    return (field + means).astype(np.float32)


def variance_part(real, weight=1.0):
    """The variance part of S alone (S with it minus S without it), as a function of patches."""
    matrix = rings.ring_matrix(real.shape[-1], 16)
    powers, moments = rings.patch_ring_powers(real, matrix), spectrum_loss.pixel_moments(real).numpy()
    with_it = spectrum_loss.SpectrumMatch(powers, matrix, False, moments, weight)
    without = spectrum_loss.SpectrumMatch(powers, matrix, False)
    return lambda patches: with_it(patches) - without(patches)


def test_the_variance_part_costs_nothing_on_average_for_the_real_law_and_charges_a_narrow_batch():
    """The KS monitor sees a generator whose pixels are 20 % too narrow; the variance part does too."""
    real = cmb_like(2048, seed=21)
    part = variance_part(real)
    same_law = [float(part(cmb_like(32, seed=100 + i))) for i in range(100)]
    narrow = [float(part(0.8 * cmb_like(32, seed=100 + i))) for i in range(100)]
    moments, shrunk = spectrum_loss.pixel_moments(real).numpy(), spectrum_loss.pixel_moments(0.8 * real).numpy()
    z = (shrunk.mean(axis=0) - moments.mean(axis=0)) / moments.std(axis=0)
    expected = np.sum(z**2) / 17  # w / (K·ū) with w = 1, 17 rings all weighing 1
    assert abs(np.mean(same_law)) < 0.2 * np.mean(narrow)
    assert 0.7 * expected < np.mean(narrow) < 1.4 * expected


def test_the_variance_part_teaches_a_generator_the_pixel_mean_and_both_parts_of_the_variance():
    """An offset, or means that scatter too much making up for too little variance inside, are unlearnt.

    The generator draws fresh patches each step, adds c and scales their means by a and the
    rest by b. It starts 0.2 σ off, with about the right total variance but neither part of
    it right, and learns from the variance part alone.
    """
    real = cmb_like(2048, seed=22)
    part, sigma = variance_part(real, weight=10.0), float(real.std())
    c, a, b = tf.Variable(0.2 * sigma), tf.Variable(1.5), tf.Variable(0.8)
    adam = tf.keras.optimizers.Adam(0.01)
    for step in range(300):
        batch = tf.constant(cmb_like(32, seed=1000 + step))
        means = tf.reduce_mean(batch, axis=[1, 2], keepdims=True)
        with tf.GradientTape() as tape:
            loss = part(c + a * means + b * (batch - means))
        adam.apply_gradients(zip(tape.gradient(loss, [c, a, b]), [c, a, b]))
    assert abs(float(c)) < 0.03 * sigma and abs(float(a) - 1.0) < 0.15 and abs(float(b) - 1.0) < 0.05


@pytest.mark.parametrize("key", ["variance_weight", "scatter_weight"])
@pytest.mark.parametrize("spectrum_weight, weight", [(30.0, -1.0), (0.0, 1.0)])
def test_a_part_weight_that_cannot_work_is_refused_naming_the_key(key, spectrum_weight, weight):
    with pytest.raises(ConfigError, match=f"train.{key}"):
        gan_config.GanConfig(train=gan_config.TrainConfig(spectrum_weight=spectrum_weight, **{key: weight}))


def scatter_part(real, weight=1.0):
    """The scatter part of S alone (S with it minus S without it), as a function of patches."""
    matrix = rings.ring_matrix(real.shape[-1], 16)
    powers = rings.patch_ring_powers(real, matrix)
    with_it = spectrum_loss.SpectrumMatch(powers, matrix, scatter_weight=weight)
    without = spectrum_loss.SpectrumMatch(powers, matrix)
    return lambda patches: with_it(patches) - without(patches)


def test_the_scatter_part_charges_patches_that_scatter_more_or_less_than_real_ones():
    """The monitors' floor is the real scatter: louder and quieter patches, or all alike, both miss it."""
    real = gaussian_field(2048, 32, 2.0, seed=41)
    part = scatter_part(real)
    batches = [gaussian_field(32, 32, 2.0, seed=500 + i) for i in range(40)]
    same_law = np.mean([float(part(b)) for b in batches])
    loud_and_quiet = np.mean([float(part(modulated(b, 0.5, i))) for i, b in enumerate(batches)])
    alike = np.mean([float(part(b / b.std(axis=(1, 2), keepdims=True) * real.std())) for b in batches])
    assert loud_and_quiet > 10 * same_law and alike > 1.5 * same_law


def test_the_scatter_part_leaves_a_rings_mean_to_the_rest_of_s_and_the_calibration_filter():
    """A ring 30 % too loud in every patch scatters as much, relative to its mean, as a real one: the
    scatter part does not charge it (the rings' bracket does), so it cannot pull against the means."""
    real = gaussian_field(2048, 32, 2.0, seed=44)
    part = scatter_part(real)
    batches = [gaussian_field(32, 32, 2.0, seed=700 + i) for i in range(40)]
    same_law = np.mean([float(part(b)) for b in batches])
    loud_ring = np.mean([float(part(boost_ring(b, 8, 1.3))) for b in batches])
    assert loud_ring == pytest.approx(same_law, rel=0.05)
    assert term(real, boost_ring(batches[0], 8, 1.3)) > 3 * abs(term(real, batches[0]))


def learn_loudness(part, start, steps, rate):
    """|a| after each step of a generator that scales fresh patches by (1 + a·g), learning a from ``part``."""
    a, adam, history = tf.Variable(start), tf.keras.optimizers.Adam(rate), []
    for step in range(steps):
        batch = tf.constant(gaussian_field(32, 32, 2.0, seed=2000 + step))
        g = tf.constant(np.random.default_rng(step).standard_normal((32, 1, 1)), tf.float32)
        with tf.GradientTape() as tape:
            loss = part(batch * (1.0 + a * g))
        adam.apply_gradients([(tape.gradient(loss, a), a)])
        history.append(abs(float(a)))
    return np.array(history)


def test_the_scatter_part_teaches_a_generator_to_stop_making_loud_and_quiet_patches():
    """a starts at 0.6 (patches far louder or quieter than real ones) and learns from the scatter part alone."""
    assert learn_loudness(scatter_part(gaussian_field(2048, 32, 2.0, seed=42)), 0.6, 150, 0.01)[-1] < 0.15


def test_the_scatter_part_is_centred_on_the_real_scatter_not_a_little_above():
    """The log of a batch's scatter averages below the log of the real one; that bias is taken out.

    A generator that scales its patches by (1 + a·g) settles at |a| ≈ 0.007 (0.019 with the
    bias left in, its minimum at 3-4 % more scatter than real).
    """
    history = learn_loudness(scatter_part(gaussian_field(4096, 32, 2.0, seed=43)), 0.3, 400, 0.005)
    assert history[-100:].mean() < 0.013


def cut_patches(n, seed, size=64, gain=lambda modulus, angle: 1.0):
    """n beam-damped patches cut from larger Gaussian fields (not periodic, like patches of a sky).

    ``gain(|k|, folded angle in degrees)`` scales each mode's amplitude (k in patch fundamentals).
    """
    big = 2 * size
    k = np.fft.fftfreq(big) * size
    kx, ky = np.abs(k[:, None]), np.abs(k[None, :])
    modulus = np.hypot(kx, ky)
    angle = np.degrees(np.arctan2(np.minimum(kx, ky), np.maximum(kx, ky) + 1e-12))
    amplitude = np.where(modulus > 0, np.maximum(modulus, 1e-9) ** -1.0, 0.0) * np.exp(-modulus**2 / 150)
    noise = np.fft.fft2(np.random.default_rng(seed).standard_normal((n, big, big)))
    return np.fft.ifft2(noise * amplitude * gain(modulus, angle)).real[:, :size, :size].astype(np.float32)


def test_prewhitened_rings_read_the_power_of_the_top_rings_of_cut_out_patches():
    """30 % more power above ring 24, where the beam leaves 1e-5 of ring 16's: the prewhitened reading sees all of it.

    Cut off at the interior's edges without a window, its leakage from the acoustic scales
    read 1.00–1.11 here, and the term's cost hardly rose.
    """
    matrix = rings.ring_matrix(64, 32)
    hot = lambda modulus, angle: np.where(modulus >= 24, np.sqrt(1.3), 1.0)
    batch, louder = cut_patches(32, 2), cut_patches(32, 2, gain=hot)
    read = lambda x: rings.patch_ring_powers(x.astype(np.float64), matrix, prewhiten=True).mean(axis=0)
    assert np.allclose((read(louder) / read(batch))[26:], 1.3, atol=0.03)
    real = cut_patches(1024, 1)
    hann = spectrum_loss.SpectrumMatch(rings.patch_ring_powers(real, matrix), matrix, floor=1e-12)
    both = spectrum_loss.SpectrumMatch(rings.patch_ring_powers(real, matrix), matrix, floor=1e-12,
                                       whitened=rings.patch_ring_powers(real, matrix, prewhiten=True))
    assert abs(float(both(batch))) < 0.01  # a real batch costs about nothing
    assert float(both(louder)) - float(hann(louder)) > 0.5 * float(hann(louder)) > 0.01


def test_the_periodic_reading_is_the_referees_unwindowed_one_in_numpy_and_tensorflow():
    x = cut_patches(4, 3, size=32).astype(np.float64)
    referee = np.abs(referee_features._periodic_modes(x) * referee_features._laplacian_transfer(x.shape[1:])) ** 2
    assert np.allclose(np.abs(np.fft.rfft2(rings.periodic_laplacian(x, np))) ** 2, referee, rtol=1e-9, atol=1e-12)
    assert np.allclose(rings.periodic_laplacian(tf.constant(x), tf).numpy(), rings.periodic_laplacian(x, np))


def test_the_periodic_reading_charges_small_scales_at_the_patch_edge_that_the_windows_hide():
    """Pixel-scale noise in the outer two rows and columns only: the windows weigh those pixels little or not at all."""
    matrix = rings.ring_matrix(64, 32)
    real, batch = cut_patches(1024, 1), cut_patches(32, 2)
    edge = np.ones((64, 64), bool)
    edge[2:-2, 2:-2] = False
    noisy = batch + np.where(edge, 0.5 * batch.std() * np.random.default_rng(5).standard_normal(batch.shape), 0.0)
    powers = lambda **reading: rings.patch_ring_powers(real, matrix, **reading)
    windowed = spectrum_loss.SpectrumMatch(powers(), matrix, floor=1e-12, whitened=powers(prewhiten=True))
    both = spectrum_loss.SpectrumMatch(powers(), matrix, floor=1e-12, whitened=powers(prewhiten=True),
                                       periodic=powers(periodic=True))
    assert abs(float(both(batch))) < 0.02  # a real batch costs about nothing
    added = lambda x: float(both(x)) - float(windowed(x))
    assert added(noisy.astype(np.float32)) > 10 * max(abs(added(batch)), 0.01)
    stronger = spectrum_loss.SpectrumMatch(powers(), matrix, floor=1e-12, whitened=powers(prewhiten=True),
                                           periodic=powers(periodic=True), periodic_weight=4.0)
    weighed = float(stronger(noisy.astype(np.float32))) - float(windowed(noisy.astype(np.float32)))
    assert weighed == pytest.approx(4 * added(noisy.astype(np.float32)), rel=1e-3)  # train.spectrum_periodic_weight


def test_sectors_see_power_moved_from_the_axes_to_the_diagonals_of_the_same_rings():
    """Each ring 15 % quieter along the grid axes and 15 % louder along the diagonals: whole rings keep their power."""
    tilted = lambda modulus, angle: np.sqrt(np.where(angle < 15, 0.85, np.where(angle >= 30, 1.15, 1.0)))
    real, batch, skewed = cut_patches(1024, 1), cut_patches(32, 2), cut_patches(32, 2, gain=tilted)
    whole = rings.ring_matrix(64, 32)
    thirds = rings.sector_matrix(64, 32, 3)
    assert np.array_equal(rings.sector_matrix(64, 32, 1), whole)
    assert np.array_equal(rings.column_rings(whole), np.arange(33))
    assert np.array_equal(np.unique(rings.column_rings(thirds)), np.arange(33)) and thirds.shape[1] > 2 * 33
    term = lambda matrix: spectrum_loss.SpectrumMatch(rings.patch_ring_powers(real, matrix), matrix, floor=1e-12)
    by_ring, by_sector = term(whole), term(thirds)
    assert float(by_sector(skewed)) - float(by_sector(batch)) > 0.005  # a 15 % error costs 0.0225 · its weight
    assert float(by_ring(skewed)) - float(by_ring(batch)) < 0.1 * (float(by_sector(skewed)) - float(by_sector(batch)))
    assert abs(float(by_sector(batch))) < 0.01


def test_prewhitening_and_sectors_are_parts_of_the_spectrum_term():
    with pytest.raises(ConfigError, match="spectrum_prewhiten needs train.spectrum_weight"):
        gan_config.TrainConfig(spectrum_prewhiten=True)
    with pytest.raises(ConfigError, match="spectrum_periodic needs train.spectrum_weight"):
        gan_config.TrainConfig(spectrum_periodic=True)
    with pytest.raises(ConfigError, match="spectrum_periodic_weight must be > 0"):
        gan_config.TrainConfig(spectrum_weight=1.0, spectrum_periodic=True, spectrum_periodic_weight=0.0)
    assert gan_config.TrainConfig(spectrum_weight=1.0, spectrum_prewhiten=True).spectrum_prewhiten
    for sectors, weight in ((3, 0.0), (0, 1.0), (9, 1.0)):
        with pytest.raises(ConfigError, match="spectrum_sectors must be 1 … 8"):
            gan_config.TrainConfig(spectrum_weight=weight, spectrum_sectors=sectors)
    assert gan_config.TrainConfig(spectrum_weight=1.0, spectrum_sectors=3).spectrum_sectors == 3


def test_the_scatter_part_reads_whole_rings_also_when_the_term_cuts_them_into_sectors():
    """The referee scores band powers' scatter on whole rings; a third of a ring scatters more."""
    real = gaussian_field(1024, 32, 2.0, seed=21)
    loud_and_quiet = tf.constant(modulated(gaussian_field(32, 32, 2.0, seed=22), 0.5, 23))

    def scatter_part(sectors):
        matrix = rings.sector_matrix(32, 16, sectors)
        powers = rings.patch_ring_powers(real, matrix)
        both, means = (float(spectrum_loss.SpectrumMatch(powers, matrix, scatter_weight=c)(loud_and_quiet))
                       for c in (1.0, 0.0))
        return both - means

    assert scatter_part(1) > 0.01
    assert scatter_part(3) == pytest.approx(scatter_part(1), rel=1e-3)
