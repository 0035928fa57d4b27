"""G's calibration filter (``science.calibration``): it takes a ring-to-ring ripple out of the mean
power spectrum and leaves what a filter cannot fix where it was."""
import numpy as np
import pytest

from cosmotrain.science import calibration, rings
from testlib import mean_ring_powers
from test_spectrum_loss import gaussian_field, modulated

SIZE, TOP = 32, 16


def rippled(patches, depth):
    """patches whose ring k has (1 + depth·(−1)^k) × its power: the kind of ripple G ends with."""
    ring = calibration.ring_index(SIZE, TOP)
    gain = np.sqrt(1.0 + depth * (-1.0) ** ring)
    return np.fft.ifft2(np.fft.fft2(patches) * gain).real.astype(np.float32)


def relative_scatter(patches, matrix):
    powers = rings.patch_ring_powers(patches, matrix)
    return powers.std(axis=0) / powers.mean(axis=0)


@pytest.fixture(scope="module")
def fields():
    real = gaussian_field(512, SIZE, 2.0, seed=31)
    made = modulated(rippled(gaussian_field(512, SIZE, 2.0, seed=32), 0.1), 0.3, seed=33)  # ripple, and loud/quiet
    return real, made, rings.ring_matrix(SIZE, TOP)


def test_the_filter_gives_the_real_mean_ring_powers(fields):
    real, made, matrix = fields
    target = mean_ring_powers(real, matrix)
    gains = calibration.fit(made, target)
    before = mean_ring_powers(made, matrix) / target
    after = mean_ring_powers(calibration.apply(made, gains), matrix) / target
    assert np.abs(before - 1).max() > 0.08
    assert np.abs(after - 1).max() < 0.01
    # held-out patches of the same generator: the filter is a property of the generator, not of its draw
    more = modulated(rippled(gaussian_field(512, SIZE, 2.0, seed=34), 0.1), 0.3, seed=35)
    held_out = mean_ring_powers(calibration.apply(more, gains), matrix) / target
    assert np.abs(held_out[2:] - 1).max() < 0.05 < np.abs(mean_ring_powers(more, matrix)[2:] / target[2:]
                                                              - 1).max()


def test_the_filter_leaves_the_scatter_between_patches_alone(fields):
    """Too much scatter (here: loud and quiet patches) is G's to fix; a linear filter must not hide it."""
    real, made, matrix = fields
    gains = calibration.fit(made, mean_ring_powers(real, matrix))
    np.testing.assert_allclose(relative_scatter(calibration.apply(made, gains), matrix)[1:],
                               relative_scatter(made, matrix)[1:], rtol=0.05)
    assert np.all(relative_scatter(made, matrix)[4:] > 1.2 * relative_scatter(real, matrix)[4:])


def test_the_filter_works_patch_by_patch_and_leaves_modes_beyond_the_top_ring(fields):
    _, made, _ = fields
    gains = np.linspace(0.5, 1.5, TOP + 1)
    whole = calibration.apply(made[:300], gains)
    np.testing.assert_allclose(calibration.apply(made[7:8], gains), whole[7:8], atol=1e-5)
    corner = np.fft.fft2(whole)[:, SIZE // 2, SIZE // 2]  # |k| = 16·√2 > ring 16
    np.testing.assert_allclose(corner, np.fft.fft2(made[:300])[:, SIZE // 2, SIZE // 2], rtol=1e-3, atol=1e-3)
    assert calibration.apply(made[:4], np.ones(TOP + 1)) == pytest.approx(made[:4], abs=1e-5)


def test_a_generator_far_off_is_not_hidden(fields):
    """A filter corrects a ripple of a few per cent; 100 x too little power is G's failure, left for
    the monitor to report."""
    real, made, matrix = fields
    gains = calibration.fit(made * 0.1, mean_ring_powers(real, matrix))
    assert gains.max() == calibration.MAX_GAIN
    assert np.all(mean_ring_powers(calibration.apply(made * 0.1, gains), matrix)
                  < 0.2 * mean_ring_powers(real, matrix))


def loud_rim(patches, width=6, boost=0.6):
    """patches whose small scales are (1 + boost) × as loud within ``width`` pixels of the edge: a G that is
    not stationary out to its borders, which the Hann window all but ignores."""
    smooth = np.fft.ifft2(np.fft.fft2(patches) * np.exp(-0.5 * (rings.mode_rings(SIZE) / 4.0) ** 2)).real
    rim = np.ones((SIZE, SIZE), bool)
    rim[width:-width, width:-width] = False
    return (patches + boost * (patches - smooth) * rim).astype(np.float32)


def test_fitted_through_the_laplacian_the_filter_matches_what_the_rings_test_reads(fields):
    """From ring 2 on, ``whitened`` targets fit the patches' Laplacian under the referee's Tukey window
    (its rings reading) instead of the Hann-apodised power; rings 0 and 1, which no referee spectrum
    test reads, keep gain 1."""
    real, made, matrix = fields
    made = loud_rim(made)
    hann, white = mean_ring_powers(real, matrix), rings.patch_ring_powers(real, matrix, prewhiten=True).mean(axis=0)

    def errors(gains):
        out = calibration.apply(made, gains)
        return (np.abs(rings.patch_ring_powers(out, matrix, prewhiten=True).mean(axis=0)[2:] / white[2:] - 1).max(),
                np.abs(mean_ring_powers(out, matrix)[:2] / hann[:2] - 1).max())

    laplacian = calibration.fit(made, hann, whitened=white)
    through_hann, through_laplacian = errors(calibration.fit(made, hann)), errors(laplacian)
    assert through_laplacian[0] < 0.01 < 0.03 < through_hann[0]
    assert np.all(laplacian[:2] == 1.0) and through_laplacian[1] > 0.05  # G's own error there, left alone
    assert through_hann[1] < 0.01
