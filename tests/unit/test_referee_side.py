"""The referee on patches held in memory (data.referee_side): what picks a GAN's best checkpoint and what
`bench gan-quality` counts, on a real CMB dataset on disk (the sky code's patches, 32x32 of 8', 20' beam)."""
import numpy as np
import pytest

from cosmotrain.data import cmb_spectrum, referee_side, shards
from cosmotrain.data import sky as skies
from cosmotrain.science import referee

SHAPE, RESO = (32, 32), 8.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Skies 0-3 train, 4-5 val, and the patches of skies 6-7 (never written): the 'samples'."""
    spectrum = cmb_spectrum.load_spectrum(cmb_spectrum.SpectrumConfig())
    map_cl = skies.map_spectrum(spectrum.cl, 1024, 1600, 20.0, True)
    where = skies.patch_locations(skies.patch_centers(4), SHAPE, RESO)
    sky = [skies.simulate_patches(map_cl, where, SHAPE, RESO, 0.0, 5, i) for i in range(8)]

    def split(indices):
        patches = np.concatenate([sky[i] for i in indices])
        return {"patches": patches, "centers": np.zeros((len(patches), 2)),
                "sky": np.concatenate([np.full(len(sky[i]), i, np.int32) for i in indices])}

    root = tmp_path_factory.mktemp("referee_side") / "cmb"
    attrs = {"nside": 1024, "lmax": 1600, "fwhm_arcmin": 20.0, "reso_arcmin": RESO, "cl_source": "planck", "seed": 5}
    shards.write_dataset(root, "cmb", {"train": split(range(4)), "val": split([4, 5])}, attrs, config={}, seed=0,
                         samples_per_shard=200)
    return root, np.concatenate(sky[6:]), np.concatenate(sky[:4])


def test_patches_of_unseen_skies_pass_and_badness_is_zero(dataset):
    root, unseen, _ = dataset
    verdict = referee_side.judge(referee_side.build(root, "val"), unseen)
    assert verdict["pass"] and set(verdict["tests"]) == set(referee.TESTS)
    assert referee_side.badness(verdict) == 0.0


def test_pixel_noise_copies_and_the_wrong_split_are_caught(dataset):
    root, unseen, train = dataset
    reference = referee_side.build(root, "val")
    noisy = unseen + np.random.default_rng(0).normal(0, 10, unseen.shape)  # pixel-scale power, as G's grids make
    slightly = referee_side.judge(reference, unseen + np.random.default_rng(0).normal(0, 2, unseen.shape))
    verdict = referee_side.judge(reference, noisy)
    assert not verdict["pass"] and {"band_powers", "rings"} <= set(verdict["failed"])
    assert referee_side.badness(verdict) > referee_side.badness(slightly)  # further off, worse
    copies = referee_side.judge(reference, train[:len(unseen)])
    assert "memorisation" in copies["failed"]
    with pytest.raises(Exception, match="no 'test' split"):
        referee_side.build(root, "test")


def test_constant_patches_fail_every_test_instead_of_crashing(dataset):
    root, unseen, _ = dataset
    verdict = referee_side.judge(referee_side.build(root, "val"), np.full_like(unseen[:64], 3.0))
    assert not verdict["pass"] and verdict["failed"] == list(referee.TESTS)
    assert referee_side.badness(verdict) > 1000
