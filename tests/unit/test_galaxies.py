"""The synthetic galaxy generator: balance, determinism, format, morphology, and difficulty."""
import numpy as np
import pytest

from cosmotrain.data import galaxies, galaxy_dataset, shards


@pytest.fixture(scope="module")
def sample():
    return galaxies.synthetic_galaxies(0, 600, seed=11)


@pytest.fixture(scope="module")
def simple():
    return galaxies.synthetic_galaxies(0, 600, seed=11, generator="simple")


def test_fields_have_the_dataset_shapes_and_dtypes(sample):
    assert sample["images"].shape == (600, 64, 64, 3) and sample["images"].dtype == np.uint8
    assert sample["labels"].shape == (600,) and sample["labels"].dtype == np.int8
    assert sample["vote_fractions"].shape == (600, 3) and sample["vote_fractions"].dtype == np.float32
    assert sample["ids"].dtype == np.int64 and np.array_equal(sample["ids"], np.arange(600))
    assert np.allclose(sample["vote_fractions"].sum(1), 1.0, atol=1e-5)


def test_labels_follow_the_galaxy_zoo_agreement_rule(sample):
    votes, labels = sample["vote_fractions"], sample["labels"]
    top = votes.max(axis=1).astype(np.float64)  # stored as float32: 27/30 is 0.9 - 2e-8
    assert np.array_equal(labels >= 0, top >= 0.9 - 1e-6)            # kept exactly when >= 90 % agree
    assert np.array_equal(labels[labels >= 0], votes[labels >= 0].argmax(1))
    kept = (labels >= 0).mean()
    assert 0.3 < kept < 0.8, kept                                # a survey keeps part of its galaxies
    assert np.bincount(labels[labels >= 0], minlength=3).min() > 20  # every class among the kept
    unkept = votes[labels < 0]
    assert unkept.max(axis=1).min() < 0.6                        # some galaxies are genuinely ambiguous


def test_a_lower_threshold_keeps_more_of_the_same_galaxies():
    strict = galaxies.synthetic_galaxies(0, 240, seed=3, size=32)
    loose = galaxies.synthetic_galaxies(0, 240, seed=3, size=32, threshold=0.7)
    assert np.array_equal(strict["images"], loose["images"])
    assert np.array_equal(strict["vote_fractions"], loose["vote_fractions"])
    assert (loose["labels"] >= 0).sum() > (strict["labels"] >= 0).sum()


def test_the_simple_generator_is_kept_balanced_and_one_hot(simple):
    assert np.array_equal(simple["vote_fractions"].argmax(1), simple["labels"])
    assert np.array_equal(simple["vote_fractions"].sum(1), np.ones(600, np.float32))
    for n in (30, 601):
        counts = np.bincount(galaxies.synthetic_galaxies(0, n, seed=2, size=16, generator="simple")["labels"],
                             minlength=3)
        assert counts.max() - counts.min() <= 1 and counts.sum() == n


def test_an_unknown_generator_is_refused():
    with pytest.raises(ValueError, match="unknown generator 'fancy'"):
        galaxies.synthetic_galaxies(0, 3, seed=0, generator="fancy")


def test_same_seed_same_galaxies_other_seed_different(sample):
    again = galaxies.synthetic_galaxies(0, 600, seed=11)
    assert all(np.array_equal(sample[k], again[k]) for k in sample)
    other = galaxies.synthetic_galaxies(0, 600, seed=12)
    assert np.abs(other["images"].astype(int) - sample["images"]).mean() > 5


@pytest.mark.parametrize("generator", ["survey", "simple"])
def test_any_slice_equals_the_same_galaxies_of_the_whole_set(sample, simple, generator):
    # what lets each MPI rank render its own part: galaxy i depends on (seed, i) only
    whole = sample if generator == "survey" else simple
    part = galaxies.synthetic_galaxies(230, 490, seed=11, generator=generator)  # crosses block boundaries
    assert all(np.array_equal(part[k], whole[k][230:490]) for k in part)
    assert np.array_equal(part["ids"], np.arange(230, 490))
    shorter = galaxies.synthetic_galaxies(0, 100, seed=11, generator=generator)
    assert np.array_equal(shorter["images"], whole["images"][:100])
    empty = galaxies.synthetic_galaxies(500, 500, seed=11, generator=generator)  # a rank with nothing to do
    assert empty["images"].shape == (0, 64, 64, 3) and len(empty["labels"]) == len(empty["ids"]) == 0


def test_image_size_is_configurable():
    out = galaxies.synthetic_galaxies(0, 6, seed=0, size=96)
    assert out["images"].shape == (6, 96, 96, 3)


def test_images_show_a_galaxy_on_a_dark_sky(sample):
    img = sample["images"].astype(float).mean(axis=3)
    centre = img[:, 24:40, 24:40].max(axis=(1, 2))
    border = np.concatenate([img[:, :4].reshape(600, -1), img[:, -4:].reshape(600, -1)], axis=1)
    assert np.mean(centre > np.median(border, axis=1) + 40) > 0.95  # galaxies stand out (a few are faint)
    assert np.median(border) < 40                                   # sky stays dark
    assert (sample["images"] == 255).mean() < 0.01                   # little saturation


def test_cutouts_are_scaled_to_the_galaxy_so_size_says_little(sample):
    """As in the Kaggle cut-outs, each image spans the same number of Petrosian radii."""
    from cosmotrain.science import morphology

    kept = sample["labels"] >= 0
    size = morphology.measure(sample["images"][kept])["size"]
    medians = [np.nanmedian(size[sample["labels"][kept] == c]) for c in range(3)]
    assert max(medians) / min(medians) < 1.6, medians  # the old generator: 13.0 / 7.5 px


def test_kept_edge_on_disks_are_thin_and_kept_round_galaxies_round(sample):
    from cosmotrain.science import morphology

    q = morphology.measure(sample["images"])["axis_ratio"]
    labels = sample["labels"]
    assert np.nanmedian(q[labels == 1]) < 0.45
    assert np.nanmedian(q[labels == 0]) > 0.7


def test_the_population_spans_every_kind_and_inclination():
    from cosmotrain.data import population

    p = population.draw(np.random.default_rng(0), 4000)
    assert set(np.unique(p["kind"]).astype(int)) == set(range(len(population.KINDS)))
    spirals = p["kind"] == population.SPIRAL
    assert np.histogram(p["cos_i"][spirals], bins=5, range=(0, 1))[0].min() > 0.12 * spirals.sum()
    arms = p["arm_amp"][spirals]
    assert (arms < 0.4).mean() > 0.05 and (arms > 0.8).mean() > 0.2   # faint to grand design
    assert 0.2 < p["bar"][spirals].mean() < 0.5                      # a third barred
    assert p["n_stars"].mean() > 0.3 and p["n_neighbours"].mean() > 0.3


def test_volunteers_disagree_more_on_faint_and_half_inclined_galaxies():
    from cosmotrain.data import population, volunteers

    p = population.draw(np.random.default_rng(1), 4000)
    agreement = volunteers.answer_probabilities(p).max(axis=1)
    disks = (p["kind"] == population.SPIRAL) | (p["kind"] == population.LENTICULAR)
    faint = p["mu50"] > np.quantile(p["mu50"], 0.8)
    bright = p["mu50"] < np.quantile(p["mu50"], 0.2)
    assert agreement[faint].mean() < agreement[bright].mean()
    half = disks & (np.abs(p["cos_i"] - 0.35) < 0.1)
    clear = disks & ((p["cos_i"] < 0.1) | (p["cos_i"] > 0.9))
    assert agreement[half].mean() < agreement[clear].mean()


def _flux(image: np.ndarray) -> np.ndarray:
    """Sky-subtracted flux (float [H,W]) of a simple-generator image, undoing its asinh stretch."""
    from cosmotrain.data import simple_galaxies as g

    x = image.astype(float).mean(axis=2) / 255.0
    return g.STRETCH * np.sinh(x * np.arcsinh(1.0 / g.STRETCH)) - g.SKY_LEVEL


def _ring_contrast(image: np.ndarray, r_in: float = 9.0, r_out: float = 10.5, bins: int = 16) -> float:
    """(max - min) / mean of the flux in 16 sectors of a thin ring around the light centroid."""
    f = _flux(image)
    w = np.clip(f, 0, None) ** 2
    y, x = np.indices(f.shape)
    cx, cy = (w * x).sum() / w.sum(), (w * y).sum() / w.sum()
    r = np.hypot(x - cx, y - cy)
    ring = (r >= r_in) & (r < r_out)
    sector = ((np.arctan2(y - cy, x - cx)[ring] + np.pi) / (2 * np.pi) * bins).astype(int) % bins
    profile = np.bincount(sector, f[ring], bins) / np.bincount(sector, minlength=bins)
    return float((profile.max() - profile.min()) / profile.mean())


def test_simple_spirals_have_arms_round_galaxies_do_not(simple):
    """Arms show as brightness changing along a ring around the centre; a round galaxy's barely does."""
    c = np.array([_ring_contrast(im) for im in simple["images"]])
    labels = simple["labels"]
    assert np.median(c[labels == 2]) > 1.5 * np.median(c[labels == 0])


def test_stratified_split_is_80_10_10_per_class_disjoint_and_seeded():
    labels = np.repeat(np.array([0, 1, 2], np.int8), [500, 300, 200])
    parts = galaxy_dataset.stratified_split(labels, (0.8, 0.1, 0.1), seed=3)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [800, 100, 100]
    for s, frac in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert np.bincount(labels[parts[s]]).tolist() == [500 * frac, 300 * frac, 200 * frac]
    everything = np.concatenate(list(parts.values()))
    assert np.array_equal(np.sort(everything), np.arange(1000))
    assert all(np.array_equal(parts[s], galaxy_dataset.stratified_split(labels, seed=3)[s]) for s in parts)
    assert not np.array_equal(parts["train"], galaxy_dataset.stratified_split(labels, seed=4)["train"])
    assert len(set(labels[parts["train"][:30]])) == 3  # shuffled: classes mixed on disk


def test_split_counts_always_add_up():
    for n in (0, 1, 7, 10, 6167):
        assert shards.split_counts(n, (0.8, 0.1, 0.1)).sum() == n


def test_the_shipped_config_file_holds_the_built_in_defaults():
    from testlib import REPO
    from cosmotrain import config
    from cosmotrain.data.galaxy_dataset import GalaxiesConfig

    assert config.load(GalaxiesConfig, REPO / "configs" / "galaxies.yaml") == GalaxiesConfig()
