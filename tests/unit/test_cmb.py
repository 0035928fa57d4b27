"""CMB datasets: input spectra, checks before any map, projection, seeds, the commands."""
import json

import numpy as np
import pytest

from testlib import run_cli
from cosmotrain.data import cmb, cmb_spectrum, reader
from cosmotrain.data import sky as skies
from cosmotrain.errors import UserError
from cosmotrain.science import spectra

# a small, quick dataset: 3 skies (one per split), 32x32 patches of 14', a 30' beam
SMALL = ["maps.n_maps=3", "maps.nside=256", "maps.lmax=1100", "maps.fwhm_arcmin=30", "patches.reso_arcmin=14",
         "patches.shape=[32,32]", "patches.centers_nside=4", "patches.b_min_deg=20", "output.samples_per_shard=100",
         "splits.train=0.34", "splits.val=0.33", "splits.test=0.33"]


def sets(items):
    return [a for item in items for a in ("--set", item)]


@pytest.fixture(scope="module")
def fiducial():
    return cmb_spectrum.load_spectrum(cmb_spectrum.SpectrumConfig())


# ---------------------------------------------------------------- the spectrum

def test_shipped_spectrum_is_planck_2018_and_says_how_it_was_made(fiducial):
    header = [line for line in cmb_spectrum.fiducial_path().read_text().splitlines() if line.startswith("#")]
    text = "\n".join(header)
    assert "Planck 2018" in text and "CAMB 2." in text and "omch2=0.12011" in text and "uK^2" in text
    assert fiducial.lmax >= 4000 and fiducial.convention == "cl" and fiducial.cl[:2].tolist() == [0, 0]
    dl = spectra.dl_from_cl(np.arange(fiducial.lmax + 1), fiducial.cl)
    assert 200 <= int(np.argmax(dl)) <= 230 and 5500 < dl.max() < 5900  # the first acoustic peak


def test_camb_dat_two_column_dl_and_fits_all_give_the_same_cl(tmp_path, fiducial):
    import healpy as hp

    ell = np.arange(2, 3001)
    dl = spectra.dl_from_cl(ell, fiducial.cl[2:3001])
    camb_dat = tmp_path / "lensedCls.dat"  # CAMB layout: L, TT, EE, BB, TE, all D_ℓ
    np.savetxt(camb_dat, np.column_stack([ell, dl, dl / 100, dl / 1e4, dl / 10]), header="L TT EE BB TE")
    two_dl = tmp_path / "dl.txt"  # no header: the slope tells D_ℓ from C_ℓ
    np.savetxt(two_dl, np.column_stack([ell, dl]))
    two_cl = tmp_path / "cl.txt"
    np.savetxt(two_cl, np.column_stack([ell, fiducial.cl[2:3001]]))
    fits = tmp_path / "cl.fits"
    hp.write_cl(str(fits), fiducial.cl[:3001])
    for path, convention in [(camb_dat, "dl"), (two_dl, "dl"), (two_cl, "cl"), (fits, "cl")]:
        got = cmb_spectrum.read_spectrum(path)
        assert got.convention == convention, (path, got.detected_by)
        np.testing.assert_allclose(got.cl, fiducial.cl[:3001], rtol=1e-6, atol=1e-12)
    declared = cmb_spectrum.read_spectrum(two_dl, convention="cl")  # a declaration overrides detection
    assert declared.detected_by == "declared" and declared.cl[100] > 100 * fiducial.cl[100]


@pytest.mark.parametrize("content, message", [
    ("2 100.0\n3 -5.0\n4 80.0\n", r"negative power \(first at ℓ = 3\)"),
    ("2 1 2\n3 1 2\n", "3 unnamed columns"),
    ("# ell EE BB\n2 1 2\n3 1 2\n", "cannot tell which of the columns"),
    ("2 1\n5 1\n", "first column is not ℓ"),
    ("2 nan\n3 1\n", "NaN"),
])
def test_bad_spectrum_files_get_one_line_naming_problem_and_fix(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as info:
        cmb_spectrum.read_spectrum(path, convention="cl")
    assert "\n" not in str(info.value) and ";" in str(info.value)  # problem; fix


def test_a_spectrum_in_k2_declared_as_uk2_is_caught(tmp_path, fiducial):
    path = tmp_path / "k2.txt"
    np.savetxt(path, np.column_stack([np.arange(2, 2001), fiducial.cl[2:2001] * 1e-12]), header="ell C_ell")
    with pytest.raises(UserError, match="set spectrum.units: K2"):
        cmb_spectrum.read_spectrum(path)
    assert cmb_spectrum.read_spectrum(path, units="K2").cl[500] == pytest.approx(fiducial.cl[500])


# ---------------------------------------------------------------- checks before any map

def config(**sections):
    base = {"maps": {"nside": 256, "lmax": 1100, "fwhm_arcmin": 30.0},
            "patches": {"shape": [32, 32], "reso_arcmin": 14.0, "centers_nside": 4}}
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    from cosmotrain.config import from_dict

    return from_dict(cmb.CmbConfig, base)


@pytest.mark.parametrize("sections, message", [
    ({"maps": {"nside": 300}}, "maps.nside = 300 is not a power of two"),
    ({"maps": {"nside": 2048, "lmax": 6000}}, "stops at ℓ = 5000"),
    ({"maps": {"n_maps": 5}, "splits": {"train": 0.95, "val": 0.05, "test": 0.0}},
     r"split val would get no sky of the 5 .*maps.n_maps >= 20"),
    ({"patches": {"centers_nside": 16}}, "patches overlap"),
    ({"patches": {"shape": [256, 256]}}, "too large"),
    ({"patches": {"b_min_deg": 85.0}}, "no 32x32 patch"),
    ({"splits": {"train": 0.9, "val": 0.2, "test": 0.1}}, "add up to 1"),
])
def test_impossible_configs_fail_with_the_fix(sections, message, fiducial):
    with pytest.raises(UserError, match=message) as info:
        cmb.check_config(config(**sections), fiducial)
    assert "\n" not in str(info.value)


def test_a_band_limit_below_the_patch_nyquist_warns(fiducial):
    warnings = cmb.check_config(config(maps={"lmax": 500}), fiducial)
    assert len(warnings) == 1 and "below the patches' Nyquist ℓ = 771 while the beam" in warnings[0]
    assert cmb.check_config(config(), fiducial) == []


def test_bad_nside_on_the_command_line_fails_before_any_work(tmp_path):
    out = tmp_path / "never"
    done = run_cli("data", "cmb", "--out", out, *sets(SMALL + ["maps.nside=1000"]), timeout=120)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "maps.nside = 1000 is not a power of two" in errors[0]
    assert not out.exists()


# ---------------------------------------------------------------- projection and skies

def test_patches_are_healpy_gnomview_north_up_east_left(fiducial):
    """The synthesised patch of a smooth sky is what gnomview shows of that sky's map."""
    import healpy as hp

    map_cl = skies.map_spectrum(fiducial.cl, 512, 30, 0.0, False)
    shape, reso, centre = (16, 20), 30.0, np.array([[30.0, 40.0]])
    mine = skies.simulate_patches(map_cl, skies.patch_locations(centre, shape, reso), shape, reso, 0.0, 1, 0)[0]
    sky = hp.alm2map(skies.sky_alm(map_cl, 1, 0), 2048, lmax=30)
    view = np.asarray(hp.gnomview(sky, rot=(30, 40, 0), xsize=20, ysize=16, reso=reso, return_projected_map=True,
                                  no_plot=True))[::-1]  # gnomview's row 0 is the south edge
    assert np.abs(mine - view).max() < 0.02 * mine.std()
    assert np.abs(mine - view[:, ::-1]).max() > 0.2 * mine.std()  # a mirrored patch would be seen


def test_centres_keep_patches_outside_the_galactic_cut():
    reach = skies.patch_half_diagonal_deg((64, 64), 4.0)
    centers = skies.patch_centers(8, 20.0, reach)
    v = skies.patch_vectors(centers, (64, 64), 4.0)
    lat = np.degrees(np.arcsin(v[2]))
    assert 0 < len(centers) < 768 and np.abs(lat).min() >= 20.0


def test_sky_i_depends_only_on_seed_and_i_and_leaves_numpy_alone(fiducial):
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    map_cl = skies.map_spectrum(fiducial.cl, 64, 191, 60.0, True)
    where = skies.patch_locations(skies.patch_centers(1), (8, 8), 60.0)
    a, b, c = (skies.simulate_patches(map_cl, where, (8, 8), 60.0, 5.0, seed=1, index=i) for i in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_noise_level_is_per_arcmin_of_patch_pixel():
    where = skies.patch_locations(skies.patch_centers(2), (16, 16), 5.0)
    noise = skies.simulate_patches(np.zeros(101), where, (16, 16), 5.0, 30.0, seed=0, index=0)
    assert noise.std() == pytest.approx(30.0 / 5.0, rel=0.02)


def test_every_sky_belongs_to_one_split_whatever_the_rank_count():
    split = cmb.sky_splits(20, (0.8, 0.1, 0.1), seed=4)
    assert np.bincount(split).tolist() == [16, 2, 2]
    np.testing.assert_array_equal(split, cmb.sky_splits(20, (0.8, 0.1, 0.1), seed=4))
    assert not np.array_equal(split, cmb.sky_splits(20, (0.8, 0.1, 0.1), seed=5))


# ---------------------------------------------------------------- commands end to end

@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmb") / "small"
    done = run_cli("data", "cmb", "--config", "configs/cmb_tiny.yaml", "--out", out, *sets(SMALL), timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def test_dataset_has_the_documented_layout(small_dataset):
    manifest = reader.read_manifest(small_dataset)
    attrs = manifest["attrs"]
    for key in ("nside", "lmax", "fwhm_arcmin", "reso_arcmin", "cl_source", "seed"):
        assert key in attrs
    assert manifest["spectrum"]["convention"] == "cl" and manifest["spectrum"]["units"] == "uK^2"
    assert set(manifest["splits"]) == {"train", "val", "test"}
    total = sum(s["n"] for s in manifest["splits"].values())
    assert total == manifest["patches"]["per_map"] * 3
    skies_of = manifest["skies"]  # one sky per split here, and never one sky in two splits
    assert sorted(s for split in skies_of.values() for s in split) == [0, 1, 2]
    for name, listed in skies_of.items():
        assert sorted(set(reader.ShardSet(small_dataset, name).read(0, 1)["sky"].tolist())) == listed[:1]
    data = reader.ShardSet(small_dataset, "train", kind="cmb", verify=True)
    sample = data.read(0, data.n)
    assert sample["patches"].dtype == np.float32 and sample["patches"].shape[1:] == (32, 32)
    assert sample["centers"].dtype == np.float64 and np.abs(sample["centers"][:, 1]).min() >= 20
    assert sample["sky"].dtype == np.int32 and set(sample["sky"].tolist()) == set(skies_of["train"])
    assert 60 < sample["patches"].std() < 140  # the CMB: ~100 μK
    assert (small_dataset / "examples.png").stat().st_size > 10_000
    assert (small_dataset / "cl_input.txt").is_file()


def test_existing_dataset_is_not_overwritten(small_dataset):
    before = (small_dataset / "manifest.json").read_text()
    done = run_cli("data", "cmb", "--out", small_dataset, *sets(SMALL), timeout=120)
    assert done.returncode == 2 and "--overwrite" in done.stderr
    assert (small_dataset / "manifest.json").read_text() == before


def test_spectra_command_writes_json_and_plot_matching_theory_to_the_nyquist(small_dataset, tmp_path):
    out, plot = tmp_path / "cl.json", tmp_path / "cl.png"
    done = run_cli("spectra", small_dataset, "--out", out, "--plot", plot, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    for key in ("ell", "mean", "std", "theory", "n_patches", "measures"):
        assert key in result
    mean, theory, std = (np.array(result[k]) for k in ("mean", "theory", "std"))
    assert result["edges"][-1] == pytest.approx(spectra.nyquist_ell(14.0), rel=0.05) and result["n_patches"] > 50
    assert np.all(np.abs(mean - theory) < 4 * std / np.sqrt(result["n_patches"]))  # every bin, to the Nyquist
    assert plot.stat().st_size > 10_000
    assert run_cli("spectra", small_dataset, "--out", out, "--deconvolve").returncode == 2  # gone: see README


def test_cmb_spectrum_command_copies_the_shipped_table(tmp_path, fiducial):
    out = tmp_path / "fiducial.txt"
    done = run_cli("data", "cmb-spectrum", "--out", out, timeout=120)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(cmb_spectrum.read_spectrum(out).cl, fiducial.cl, rtol=1e-9)
    assert "CAMB" in out.read_text().splitlines()[3]


def test_cmb_spectrum_with_camb_matches_the_shipped_table():
    pytest.importorskip("camb")
    cl, header = cmb_spectrum.camb_spectrum(lmax=2500)
    shipped = cmb_spectrum.load_spectrum(cmb_spectrum.SpectrumConfig()).cl
    np.testing.assert_allclose(cl[2:2001], shipped[2:2001], rtol=2e-3)


def test_camb_missing_is_one_line_with_the_install_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "camb", None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install 'cosmotrain\[camb\]'"):
        cmb_spectrum.camb_spectrum(lmax=100)
