"""CMB datasets on real Open MPI ranks: identical to one rank, failing fast on bad input."""
import json
import time

import numpy as np
import pytest

from testlib import mpi_env, run_cli
from cosmotrain.data import reader

pytestmark = pytest.mark.mpi

# 3 maps on 2 ranks: rank 0 makes maps 0 and 2, rank 1 map 1 (an uneven last round)
SMALL = ["maps.n_maps=3", "maps.nside=256", "maps.lmax=1100", "maps.fwhm_arcmin=30", "maps.noise_uk_arcmin=20",
         "patches.reso_arcmin=14", "patches.shape=[32,32]", "patches.centers_nside=4", "patches.b_min_deg=20",
         "output.samples_per_shard=100", "seed=11", "splits.train=0.34", "splits.val=0.33", "splits.test=0.33"]


def sets(items):
    return [a for item in items for a in ("--set", item)]


def test_one_and_two_ranks_write_identical_datasets(tmp_path):
    """Validation (c): the dataset does not depend on the number of ranks."""
    one, two = tmp_path / "np1", tmp_path / "np2"
    a = run_cli("data", "cmb", "--out", one, *sets(SMALL), timeout=300)
    b = run_cli("data", "cmb", "--out", two, *sets(SMALL), np_=2, timeout=300,
                env=mpi_env(COSMOTRAIN_PROGRESS_SECONDS="0"))  # a progress line per map, not one a minute
    assert a.returncode == 0, a.stderr
    assert b.returncode == 0, b.stderr
    m1, m2 = reader.read_manifest(one), reader.read_manifest(two)
    assert m2["ranks"] == 2
    for split in ("train", "val", "test"):
        assert [s["sha256"] for s in m1["splits"][split]["shards"]] == \
            [s["sha256"] for s in m2["splits"][split]["shards"]]
        x = reader.ShardSet(one, split).read(0, m1["splits"][split]["n"])
        y = reader.ShardSet(two, split).read(0, m2["splits"][split]["n"])
        np.testing.assert_array_equal(x["patches"], y["patches"])
        np.testing.assert_array_equal(x["centers"], y["centers"])
    assert b.stderr.count("INFO wrote") == 1  # rank 0 alone reports ...
    assert "3/3" in b.stderr  # ... and its progress bar counts the maps of both ranks

    s1, s2 = tmp_path / "s1.json", tmp_path / "s2.json"
    assert run_cli("spectra", one, "--out", s1, timeout=300).returncode == 0
    assert run_cli("spectra", one, "--out", s2, np_=2, timeout=300).returncode == 0
    r1, r2 = json.loads(s1.read_text()), json.loads(s2.read_text())
    np.testing.assert_allclose(r1["mean"], r2["mean"], rtol=1e-10)
    np.testing.assert_allclose(r1["std"], r2["std"], rtol=1e-8)


def test_bad_input_on_two_ranks_fails_fast_with_one_line_each(tmp_path):
    out = tmp_path / "never"
    start = time.monotonic()
    done = run_cli("data", "cmb", "--out", out, *sets(SMALL + ["maps.lmax=6000"]), np_=2, timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert lines and all("stops at ℓ = 5000, maps.lmax is 6000" in line for line in lines)
    assert time.monotonic() - start < 60
    assert not out.exists()


def test_the_tiny_config_matches_its_model_to_2_percent_and_gaussian_scatter_to_5(tmp_path):
    """Item 1 of the G1 issue on `configs/cmb_tiny.yaml` (2 ranks): every bin up to the Nyquist ℓ.

    The band powers of all 4800 patches against the exact expectation of the estimator
    (input C_ℓ × beam² × pixel window², apodisation coupling and aliasing), and their
    patch-to-patch scatter against that of a Gaussian field of the same spectrum, computed
    exactly (reference.gaussian_band_covariance).
    """
    import reference
    from cosmotrain.data.theory import dataset_map_spectrum, dataset_theory
    from cosmotrain.science import spectra

    out = tmp_path / "tiny"
    done = run_cli("data", "cmb", "--config", "configs/cmb_tiny.yaml", "--out", out, np_=2, timeout=600)
    assert done.returncode == 0, done.stderr
    sets = [reader.ShardSet(out, s) for s in ("train", "val", "test")]
    patches = np.concatenate([data.read(0, data.n)["patches"] for data in sets])
    attrs = reader.read_manifest(out)["attrs"]
    binning = spectra.make_binning(patches.shape[1:], attrs["reso_arcmin"])
    assert binning.edges[-1] == pytest.approx(spectra.nyquist_ell(attrs["reso_arcmin"]), rel=0.07)
    bp = spectra.band_powers(patches, binning)
    ratio = bp.mean(axis=0) / dataset_theory(out, attrs, binning)
    gaussian = np.sqrt(np.diag(reference.gaussian_band_covariance(dataset_map_spectrum(out, attrs), binning)))
    scatter = bp.std(axis=0) / gaussian
    print("ell", binning.ell.round(), "\nmean/model", ratio.round(4), "\nscatter/gaussian", scatter.round(3))
    assert len(patches) == 4800 and np.all(np.abs(ratio - 1.0) < 0.02), ratio
    assert np.all((scatter > 0.95) & (scatter < 1.05)), scatter
