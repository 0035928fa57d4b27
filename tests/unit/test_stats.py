"""Pixel PDF, KS distance and Minkowski functionals, against exact and Gaussian expectations."""
import numpy as np
import pytest

from cosmotrain.science import spectra, stats
import reference


@pytest.fixture(scope="module")
def gaussian_fields():
    """400 Gaussian 64x64 fields, smooth on the pixel scale (20' beam on 4' pixels)."""
    ell = np.arange(4001.0)
    cl = 1e-2 * (ell + 30.0) ** -2 * spectra.beam_window(4000, 20.0) ** 2
    return reference.gaussian_patches(cl, 400, (64, 64), 4.0, np.random.default_rng(11))


def test_histograms_of_batches_add_up_and_keep_outliers():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 100, (10, 8, 8))
    edges = stats.histogram_edges(100.0, n_sigma=2.0, nbins=40)
    whole = stats.pixel_histogram(x, edges)
    parts = stats.pixel_histogram(x[:3], edges) + stats.pixel_histogram(x[3:], edges)
    np.testing.assert_array_equal(whole, parts)
    assert whole.sum() == x.size  # the ~5 % beyond 2σ are in the end bins
    assert whole[0] == np.sum(x < edges[1]) and whole[-1] == np.sum(x >= edges[-2])
    with pytest.raises(ValueError, match="NaN"):
        stats.pixel_histogram(np.array([1.0, np.nan]), edges)


def test_ks_distance_is_exact_and_sees_a_5_percent_width_change():
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(1)
    a, b, wider = rng.normal(size=50_000), rng.normal(size=40_000), 1.05 * rng.normal(size=40_000)
    assert stats.ks_distance(a, b) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)
    assert stats.ks_distance(a, a) == 0.0
    assert stats.ks_distance(a, wider) > 2 * stats.ks_distance(a, b)


def test_minkowski_functionals_of_gaussian_fields_match_the_analytic_curves(gaussian_fields):
    nu = np.linspace(-3.0, 3.0, 13)
    sigma = gaussian_fields.std()
    measured = stats.minkowski_functionals(gaussian_fields, nu, sigma=sigma, mean=0.0)
    expected = reference.gaussian_minkowski(nu, reference.gradient_ratio(gaussian_fields, sigma=sigma))
    mean, error = measured.mean(axis=0), measured.std(axis=0) / np.sqrt(len(measured))
    assert measured.shape == (400, 3, 13)
    assert expected[0][6] == 0.5 and expected[2][6] == 0.0 and expected[1].argmax() == 6
    for k in range(3):  # V0 = ½ erfc(ν/√2), V1 ∝ e^{-ν²/2}, V2 ∝ ν e^{-ν²/2}
        assert np.all(np.abs(mean[k] - expected[k]) < 4 * error[k] + 0.01 * np.abs(expected[k]).max()), k


def test_minkowski_functionals_of_a_bump_count_one_disk():
    """u = exp(-r²/2s²) above ν = ½ is a disk of radius s·√(2 ln 2): V2·area = 1, V1·area = 2πr/4."""
    s, n = 8.0, 96
    y, x = np.mgrid[:n, :n] - (n - 1) / 2.0
    bump = np.exp(-(x**2 + y**2) / (2 * s**2))
    mf = stats.minkowski_functionals(bump, [0.5], sigma=1.0, mean=0.0)[0, :, 0]
    area = (n - 2) ** 2
    radius = s * np.sqrt(2 * np.log(2))
    assert mf[0] * area == pytest.approx(np.pi * radius**2, rel=0.03)
    assert mf[1] * area == pytest.approx(2 * np.pi * radius / 4, rel=0.05)
    assert mf[2] * area == pytest.approx(1.0, rel=0.1)
    two = stats.minkowski_functionals(np.stack([bump, -bump]), [0.5], sigma=1.0, mean=0.0)
    assert two[1, 2, 0] * area == pytest.approx(0.0, abs=0.05)  # a dip has no excursion above ½
