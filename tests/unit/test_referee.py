"""The referee's calibration (real against real) and power (four kinds of wrong samples).

A pool of 30 simulated skies (the real sky code: a_ℓm synthesised at the pixels of 768
patches of 32x32 pixels of 8' per sky, 20' beam) is cut once; each draw takes REF_SKIES
skies as the reference and SAMPLE_SKIES others as the samples (labelled by sky, as a real
set is), with 6 fixed skies as the training split. Features, nearest-neighbour distances
and pair correlations are measured once per patch (and once per perturbed patch), so a
draw costs milliseconds. The probe is fixed from the training skies: the tests compare
means and variances of features, which do not depend on where the features are centred.

Draws share skies (24 skies, C(24, 8) choices each), so they are not independent
realisations; the binomial uncertainties quoted are those of the draws.
"""
import numpy as np
import pytest
from scipy import stats as sps

from cosmotrain.data import cmb_spectrum
from cosmotrain.data import sky as skies
from cosmotrain.science import referee
from cosmotrain.science import referee_features as rf

SHAPE, RESO, FWHM, LMAX = (32, 32), 8.0, 20.0, 1600
N_SKIES, TRAIN_SKIES, REF_SKIES, SAMPLE_SKIES = 30, 6, 4, 4
CALIBRATION_DRAWS, POWER_DRAWS = 2000, 200
RING_KS = (2, 3, 5, 8, 11, 14)  # ℓ ≈ 170 … 1180 (every k = 2 … 15 in docs/sampling.md)


def _draws(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        chosen = TRAIN_SKIES + rng.permutation(N_SKIES - TRAIN_SKIES)[:REF_SKIES + SAMPLE_SKIES]
        yield chosen[:REF_SKIES], chosen[REF_SKIES:]


class Pool:
    """Every patch of every sky, measured once."""

    def __init__(self):
        spectrum = cmb_spectrum.load_spectrum(cmb_spectrum.SpectrumConfig())
        self.map_cl = skies.map_spectrum(spectrum.cl, 1024, LMAX, FWHM, True)
        where = skies.patch_locations(skies.patch_centers(8), SHAPE, RESO)
        self.patches = np.stack([skies.simulate_patches(self.map_cl, where, SHAPE, RESO, 0.0, 77, i)
                                 for i in range(N_SKIES)])  # [skies, 768, 32, 32]
        self.n_per_sky = self.patches.shape[1]
        train = self.patches[:TRAIN_SKIES].reshape(-1, *SHAPE)
        self.probe = rf.make_probe(train, RESO)
        self.candidates = rf.d4(rf.coarse(train))
        self.rows = self.features(self.patches)
        self.sky_moments = self.sky_sums(self.rows)
        self.train = self.moments(self.sky_moments, range(TRAIN_SKIES))
        self.distances = self.nearest(self.patches)
        self.pairs = self.pair_table(self.patches)

    def features(self, patches):
        return np.stack([rf.features(p, self.probe) for p in patches])

    def nearest(self, patches):
        return np.stack([rf.nearest_distances(rf.coarse(p), self.candidates) for p in patches])

    @staticmethod
    def sky_sums(rows):
        """Moments of each sky's rows [skies, patches, F]: one Moments per sky."""
        return [rf.Moments.of(r, np.zeros(len(r), int), np.zeros(1, int)) for r in rows]

    @staticmethod
    def moments(per_sky, sky_ids):
        """The Moments of the skies ``sky_ids``, added from per-sky Moments (sky labels kept)."""
        parts = [per_sky[i] for i in sky_ids]
        return rf.Moments(sum(p.n for p in parts), sum(p.total for p in parts), sum(p.outer for p in parts),
                          np.concatenate([p.sky_n for p in parts]), np.concatenate([p.sky_sum for p in parts]))

    def pair_table(self, patches):
        """Pixel correlations of patch i of sky a with patch π(i) of sky a+1: [skies, patches]."""
        shuffled = np.random.default_rng(9).permutation(self.n_per_sky)
        out = np.empty((N_SKIES, self.n_per_sky))
        for a in range(N_SKIES):
            b = TRAIN_SKIES + (a + 1 - TRAIN_SKIES) % (N_SKIES - TRAIN_SKIES) if a >= TRAIN_SKIES else a
            pairs = np.stack([patches[a], patches[b][shuffled]], axis=1).reshape(-1, *SHAPE)
            out[a] = rf.pair_correlations(pairs)
        return out

    def correlations(self, table, sky_ids):
        """n/2 cross-sky pair correlations of the skies ``sky_ids`` (half the patches of each)."""
        return np.concatenate([table[a][:self.n_per_sky // 2] for a in sky_ids])

    def referee(self, ref, sam, per_sky=None, distances=None, pairs=None):
        """The whole referee for reference skies ``ref`` against samples from skies ``sam``."""
        per_sky = self.sky_moments if per_sky is None else per_sky
        distances = self.distances if distances is None else distances
        pairs = self.pairs if pairs is None else pairs
        r, s = self.moments(self.sky_moments, ref), self.moments(per_sky, sam)
        ref_d = self.distances[ref].ravel()
        near = int(np.sum(distances[sam].ravel() < referee.memo_threshold(ref_d)))
        return referee.run(s, r, self.train, self.probe, near, ref_d, self.correlations(pairs, sam),
                           self.correlations(self.pairs, ref))


@pytest.fixture(scope="module")
def pool():
    return Pool()


def _rates(results):
    names = referee.TESTS
    per_test = {n: np.mean([r["tests"][n]["pass"] for r in results]) for n in names}
    return per_test, float(np.mean([r["pass"] for r in results]))


def test_real_against_real_passes_each_test_99_percent_and_the_whole_referee_95(pool):
    """2000 draws: a test at 99.5 % nominal passing k of 2000 has a binomial σ of 0.16 %."""
    results = [pool.referee(ref, sam) for ref, sam in _draws(CALIBRATION_DRAWS, 1)]
    per_test, whole = _rates(results)
    low = {n: sps.beta.ppf(0.05, rate * CALIBRATION_DRAWS, CALIBRATION_DRAWS - rate * CALIBRATION_DRAWS + 1)
           for n, rate in per_test.items()}
    print("calibration", per_test, whole, low)
    assert all(rate >= 0.99 for rate in per_test.values()), per_test
    assert whole >= 0.95, whole


def _ring_boost(patches, k, factor):
    f = np.fft.fft2(patches)
    n = patches.shape[-1]
    ks = np.fft.fftfreq(n) * n
    ring = np.floor(np.hypot(ks[:, None], ks[None, :]) + 1e-9) == k
    f[..., ring] *= np.sqrt(factor)
    return np.real(np.fft.ifft2(f)).astype(np.float32)


def _shrink_scatter(patches, factor, mean_power):
    """Each patch's power in every unit ring pulled toward the pool's mean: scatter × ``factor``."""
    f = np.fft.fft2(patches)
    n = patches.shape[-1]
    ks = np.fft.fftfreq(n) * n
    ring = np.floor(np.hypot(ks[:, None], ks[None, :]) + 1e-9).astype(int)
    out = f.copy()
    for k in range(1, n // 2 + 1):
        sel = ring == k
        power = (np.abs(f[..., sel]) ** 2).mean(axis=-1)
        target = mean_power[k] + factor * (power - mean_power[k])
        out[..., sel] *= np.sqrt(np.maximum(target, 1e-12) / power)[..., None]
    return np.real(np.fft.ifft2(out)).astype(np.float32)


def _kurtosis(patches, excess):
    """A pointwise transform giving the pixel distribution an excess kurtosis ``excess`` at the same σ."""
    sigma = patches.std()
    gauss = np.random.default_rng(0).standard_normal(400_000)
    c = 0.0
    for _ in range(40):  # solve kurtosis(g + c(g³ − 3g)) = excess by bisection-free fixed point
        y = gauss + c * (gauss**3 - 3 * gauss)
        c += 0.02 * (excess - (np.mean(y**4) / np.mean(y**2) ** 2 - 3))
    u = patches / sigma
    y = u + c * (u**3 - 3 * u)
    return (y * sigma / np.sqrt(1 + 6 * c**2)).astype(np.float32)


def _power(pool, perturbed_patches, name, test):
    per_sky = pool.sky_sums(pool.features(perturbed_patches))
    distances = pool.nearest(perturbed_patches) if name == "copies" else None
    pairs = pool.pair_table(perturbed_patches)
    failed = [not pool.referee(ref, sam, per_sky, distances, pairs)["tests"][test]["pass"]
              for ref, sam in _draws(POWER_DRAWS, 2)]
    print(name, np.mean(failed))
    return float(np.mean(failed))


@pytest.mark.parametrize("k", RING_KS)
def test_a_five_percent_boost_of_one_ring_fails(pool, k):
    assert _power(pool, _ring_boost(pool.patches, k, 1.05), f"ring {k}", "rings") >= 0.95


def test_a_patch_to_patch_scatter_of_0_8_fails(pool):
    f = np.fft.fft2(pool.patches.reshape(-1, *SHAPE))
    ks = np.fft.fftfreq(SHAPE[0]) * SHAPE[0]
    ring = np.floor(np.hypot(ks[:, None], ks[None, :]) + 1e-9).astype(int)
    mean_power = np.array([(np.abs(f[:, ring == k]) ** 2).mean() if (ring == k).any() else 0 for k in range(33)])
    assert _power(pool, _shrink_scatter(pool.patches, 0.8, mean_power), "scatter", "scatter") >= 0.95


def test_an_excess_kurtosis_of_0_3_fails(pool):
    assert _power(pool, _kurtosis(pool.patches, 0.3), "kurtosis", "pixel_pdf") >= 0.95


def test_copies_of_training_patches_fail(pool):
    rng = np.random.default_rng(5)
    train = pool.patches[:TRAIN_SKIES].reshape(-1, *SHAPE)
    picks = train[rng.integers(0, len(train), pool.patches.size // (SHAPE[0] * SHAPE[1]))]
    copies = np.stack([np.rot90(p, k) for p, k in zip(picks, rng.integers(0, 4, len(picks)))])
    assert _power(pool, copies.reshape(pool.patches.shape), "copies", "memorisation") >= 0.95


def test_the_unwindowed_rings_take_the_edge_jumps_out():
    """A plane across the patch (the largest scales: not periodic on the patch) jumps at the
    patch's edges. Read on the raw Fourier grid the jump leaks into every ring (a cross
    through the origin); from the periodic component, over a hundred times less."""
    field = np.random.default_rng(3).normal(size=(8, *SHAPE))
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    tilted = field + 50.0 * (yy + 0.5 * xx)[None] / SHAPE[0]
    matrix, _ = rf._ring_matrix(rf.spectra.make_binning(SHAPE, RESO))
    n = matrix.shape[1]

    def excess(read):
        return read(tilted).mean(axis=0) / read(field).mean(axis=0) - 1

    raw = excess(lambda x: (np.abs(np.fft.rfft2(x)) ** 2).reshape(len(x), -1) @ matrix)
    unwindowed = excess(lambda x: rf.ring_powers(x, matrix)[:, n:])
    assert np.all(raw > 100 * np.abs(unwindowed)), (raw, unwindowed)
