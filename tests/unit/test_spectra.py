"""The flat-sky power spectrum estimator, its theory, transfer functions and healpy agreement."""
import numpy as np
import pytest

from cosmotrain.data import cmb_spectrum
from cosmotrain.data import sky as skies
from cosmotrain.science import spectra
import reference


@pytest.fixture(scope="module")
def fiducial_cl():
    return cmb_spectrum.load_spectrum(cmb_spectrum.SpectrumConfig()).cl


def test_white_noise_patches_give_sigma2_times_pixel_area_in_every_bin():
    rng = np.random.default_rng(1)
    sigma, reso = 10.0, 2.0
    patches = rng.normal(0.0, sigma, (400, 32, 32)).astype(np.float32)
    binning = spectra.make_binning((32, 32), reso)
    bp = spectra.band_powers(patches, binning)
    expected = sigma**2 * (reso * spectra.ARCMIN) ** 2  # μK² sr
    err = bp.std(axis=0) / np.sqrt(len(bp))
    assert bp.shape == (400, binning.nbins)
    assert np.all(np.abs(bp.mean(axis=0) - expected) < 4 * err)


def test_gaussian_patches_recover_input_spectrum_and_gaussian_scatter(fiducial_cl):
    """Validation (a): mean within 3σ of the input in every bin, scatter within 20 % of Gaussian."""
    cl = fiducial_cl * spectra.beam_window(len(fiducial_cl) - 1, 15.0) ** 2
    shape, reso, n = (32, 32), 5.0, 2000
    patches = reference.gaussian_patches(cl, n, shape, reso, np.random.default_rng(7))
    # valid range: below 0.9 Nyquist, where the beam leaves the signal above the window's leakage
    binning = spectra.make_binning(shape, reso, spectra.default_edges(shape, reso, 0.9 * spectra.nyquist_ell(reso)))
    bp = spectra.band_powers(patches, binning)
    theory = spectra.theory_band_powers(cl, binning)
    assert binning.nbins >= 5
    expected_std = reference.gaussian_band_std(spectra.expected_mode_powers(cl, binning), binning)
    z = (bp.mean(axis=0) - theory) / (expected_std / np.sqrt(n))
    assert np.all(np.abs(z) < 3.0), z
    assert np.all(np.abs(bp.std(axis=0) / expected_std - 1.0) < 0.2)
    # the naive expectation (no apodisation scatter) is 30-60 % too small: the test can tell
    naive_std = theory * np.sqrt(2.0 / binning.n_modes)
    assert np.all(bp.std(axis=0) / naive_std > 1.3)


def test_batch_is_the_same_as_one_patch_at_a_time():
    rng = np.random.default_rng(0)
    patches = rng.normal(size=(5, 16, 24))
    binning = spectra.make_binning((16, 24), 4.0)
    batch = spectra.band_powers(patches, binning)
    single = np.stack([spectra.band_powers(p, binning)[0] for p in patches])
    np.testing.assert_allclose(batch, single, rtol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        spectra.band_powers(rng.normal(size=(2, 16, 16)), binning)


def test_bad_bins_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match="increasing"):
        spectra.make_binning((32, 32), 4.0, [500, 400])
    with pytest.raises(ValueError, match="widen the bins"):
        spectra.make_binning((32, 32), 4.0, [300, 301, 1000])


def test_correlation_function_at_zero_is_the_variance_of_a_healpy_map(fiducial_cl):
    import healpy as hp

    cl = fiducial_cl[:384] * spectra.beam_window(383, 60.0) ** 2
    np.random.seed(0)
    sky = hp.synfast(cl, 128, lmax=383)
    variance = spectra.correlation_function(cl, np.array([0.0]))[0]
    assert abs(sky.var() / variance - 1.0) < 0.1


def test_pixel_window_is_one_at_large_scales_and_scales_with_nside():
    small, large = spectra.pixel_window(256, 767), spectra.pixel_window(512, 1535)
    assert small[0] == pytest.approx(1.0) and np.all(np.diff(small) <= 1e-12)
    area = 4 * np.pi / (12 * 256**2)
    ell = 128  # small ℓ·pixel: P ≈ 1 − ℓ² Ω / 24, as for a square of the same area
    assert 1 - small[ell] == pytest.approx(ell**2 * area / 24, rel=0.1)
    assert np.allclose(small[::10][:60], large[::20][:60], atol=2e-3)  # self-similar: P_2N(2ℓ) = P_N(ℓ)


def test_patches_of_one_sky_agree_with_that_skys_own_spectrum():
    """Validation (b): patch band powers vs the realised C_ℓ of the same sky, within the patch variance."""
    import healpy as hp

    lmax, fwhm, reso, shape = 1400, 20.0, 8.0, (64, 64)
    spectrum = cmb_spectrum.load_spectrum(cmb_spectrum.SpectrumConfig())
    map_cl = skies.map_spectrum(spectrum.cl, 512, lmax, fwhm, True)
    centers = skies.patch_centers(4)  # 192 patches 8.5° wide, 12.6° or more apart
    patches = skies.simulate_patches(map_cl, skies.patch_locations(centers, shape, reso), shape, reso, 0.0, 5, 0)
    binning = spectra.make_binning(shape, reso)  # every bin up to the patches' Nyquist ℓ (1350)
    bp = spectra.band_powers(patches, binning)
    expected = spectra.theory_band_powers(hp.alm2cl(skies.sky_alm(map_cl, 5, 0)), binning)
    z = (bp.mean(axis=0) - expected) / (bp.std(axis=0) / np.sqrt(len(bp)))
    assert binning.nbins >= 6 and np.all(np.abs(z) < 3.5), z
    # a patch scale wrong by 5 % (e.g. a projection bug) would be seen
    wrong = spectra.make_binning(shape, reso * 1.05, binning.edges)
    assert np.any(np.abs(spectra.band_powers(patches, wrong).mean(axis=0) / expected - 1) > 0.05)


def _without_lines(patches, wavenumber):
    """The patches with every mode on |k_x| or |k_y| = wavenumber removed."""
    n = patches.shape[-1]
    k = np.abs(np.fft.fftfreq(n) * n)
    lines = (k[:, None] == wavenumber) | (k[None, :] == wavenumber)
    return np.real(np.fft.ifft2(np.fft.fft2(patches) * ~lines))


def test_line_power_ratio_finds_power_missing_on_a_grids_nyquist_lines():
    """What a generator that upsamples a 16x16 map can get wrong at ell ~ 750: short lines, loud rest."""
    rng = np.random.default_rng(11)
    real = rng.standard_normal((300, 64, 64))
    gen = _without_lines(rng.standard_normal((300, 64, 64)), 8) * 1.1
    on, off = spectra.line_power_ratio(gen, real, 8)
    assert on == pytest.approx(1.21 / 3, abs=0.05)  # the window mixes in a third from the neighbours
    assert off > 0.95 and on < off / 2  # (the rest gives a sixth to the line beside it)
    assert spectra.line_power_ratio(gen, real, 4) == pytest.approx((1.21, 1.21), abs=0.1)  # rings far from it
    assert spectra.line_power_ratio(real[:150], real[150:], 8) == pytest.approx((1.0, 1.0), abs=0.1)
