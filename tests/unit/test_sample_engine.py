"""The sample-set engine in one process: counter-based latents, parts, resume, refusal, reading back.

The model is a small fixed-weight dense network in NumPy (a real function of its latent
vector); multi-rank behaviour and real kills are in tests/mpi/test_sample_mpi.py.
"""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from cosmotrain import sampleplan, sampleset
from cosmotrain.files import sha256
from cosmotrain.errors import UserError

DIM, SIDE, SEED = 8, 16, 5
WEIGHTS = np.random.default_rng(3).standard_normal((DIM, SIDE * SIDE)).astype(np.float32) / 3


def toy_generator(z: np.ndarray) -> np.ndarray:
    """latents [B, DIM] → patches [B, SIDE, SIDE] float32, in μK; each row the same whatever the batch
    (a BLAS matrix product may round differently at another batch size)."""
    product = (z[:, :, None] * WEIGHTS[None]).sum(axis=1)
    return (100 * np.tanh(product)).reshape(len(z), SIDE, SIDE).astype(np.float32)


def toy_spec(n=300, batch=32, seed=SEED) -> sampleset.Spec:
    return sampleset.Spec("gan-samples", n, batch, {"patches": ("float32", (SIDE, SIDE))},
                       identity={"model_sha256": "toy", "seed": seed, "latent_dim": DIM},
                       attrs={"patches": {"units": "uK_CMB"}})


def make(out, spec=None, compute=None, **kw):
    spec = spec or toy_spec()
    compute = compute or sampleset.gan_compute(toy_generator, DIM, spec.identity["seed"])
    return sampleset.produce(out, spec, compute, **kw)


def read_patches(out):
    with h5py.File(out / "samples.h5", "r") as h5:
        return h5["patches"][:]


def snapshot(out):
    return {p.name: (p.stat().st_mtime_ns, sha256(p)) for p in sorted(out.iterdir()) if p.is_file()}


class Stop(Exception):
    """Stands in for a crash inside the model (real kills: tests/mpi)."""


def crashing_after(calls):
    state = {"calls": 0}
    good = sampleset.gan_compute(toy_generator, DIM, SEED)

    def compute(a, b):
        state["calls"] += 1
        if state["calls"] > calls:
            raise Stop
        return good(a, b)
    return compute


def counting(log):
    good = sampleset.gan_compute(toy_generator, DIM, SEED)

    def compute(a, b):
        log.append((a, b))
        return good(a, b)
    return compute


def test_a_latent_depends_only_on_seed_and_index():
    whole = sampleset.latents(SEED, 0, 50, DIM)
    assert whole.dtype == np.float32 and whole.shape == (50, DIM)
    np.testing.assert_array_equal(whole[17:33], sampleset.latents(SEED, 17, 33, DIM))
    assert not np.array_equal(whole, sampleset.latents(SEED + 1, 0, 50, DIM))
    assert abs(whole.mean()) < 0.1 and abs(whole.std() - 1) < 0.1


def test_parts_are_contiguous_whole_batches_covering_the_set():
    parts = sampleplan.cut_parts(1000, 64, 3)
    assert parts[0][0] == 0 and parts[-1][1] == 1000
    assert all(a % 64 == 0 and a < b for a, b in parts)
    assert all(parts[i][1] == parts[i + 1][0] for i in range(2))
    with pytest.raises(UserError, match="use at most 2 ranks or a smaller --batch"):
        sampleplan.cut_parts(100, 64, 3)


def test_a_set_holds_the_generator_output_with_units_and_checksums(tmp_path):
    out = tmp_path / "set"
    manifest = make(out, extra={"model": {"run": "toy"}})
    expected = toy_generator(sampleset.latents(SEED, 0, 300, DIM))
    np.testing.assert_array_equal(read_patches(out), expected)
    with h5py.File(out / "samples.h5", "r") as h5:
        assert h5["patches"].is_virtual and h5["patches"].attrs["units"] == "uK_CMB"
    assert manifest["n"] == 300 and manifest["identity"]["seed"] == SEED and manifest["model"] == {"run": "toy"}
    assert "h5py" in manifest["versions"] and manifest["parts"][0]["sha256"] == sha256(out / "part-00000.h5")
    assert sampleplan.verify(out)["n"] == 300


def test_rerunning_a_complete_set_changes_nothing(tmp_path):
    out = tmp_path / "set"
    make(out)
    before = snapshot(out)
    calls = []
    make(out, compute=counting(calls))
    assert calls == [] and snapshot(out) == before


def test_a_crashed_run_resumes_with_only_the_missing_batches_and_equal_bytes(tmp_path, monkeypatch):
    reference, out = tmp_path / "ref", tmp_path / "set"
    make(reference)
    monkeypatch.setattr(sampleset, "COMMIT_SECONDS", 0.0)  # mark every batch done as soon as it is written
    with pytest.raises(Stop):
        make(out, compute=crashing_after(4))
    assert not (out / "manifest.json").exists() and not (out / "samples.h5").exists()
    calls = []
    make(out, compute=counting(calls))
    assert calls[0] == (4 * 32, 5 * 32) and len(calls) == 10 - 4  # 300 samples = 10 batches of 32
    assert sha256(out / "part-00000.h5") == sha256(reference / "part-00000.h5")
    assert sha256(out / "samples.h5") == sha256(reference / "samples.h5")


def test_batches_not_yet_on_disk_are_computed_again(tmp_path):
    out = tmp_path / "set"
    with pytest.raises(Stop):  # crash before the first commit: nothing was marked done
        make(out, compute=crashing_after(3))
    calls = []
    make(out, compute=counting(calls))
    assert len(calls) == 10
    np.testing.assert_array_equal(read_patches(out), toy_generator(sampleset.latents(SEED, 0, 300, DIM)))


def test_a_damaged_part_is_made_again(tmp_path):
    out = tmp_path / "set"
    with pytest.raises(Stop):
        make(out, compute=crashing_after(2))
    (out / "part-00000.h5").write_bytes(b"not hdf5 at all")
    make(out)
    np.testing.assert_array_equal(read_patches(out), toy_generator(sampleset.latents(SEED, 0, 300, DIM)))


def test_a_different_command_on_a_set_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "set"
    make(out)
    before = snapshot(out)
    with pytest.raises(UserError, match=r"identity.seed 5 there, 6 now.*--overwrite"):
        make(out, toy_spec(seed=6))
    with pytest.raises(UserError, match=r"n 300 there, 200 now"):
        make(out, toy_spec(n=200))
    assert snapshot(out) == before
    make(out, toy_spec(seed=6), overwrite=True)
    np.testing.assert_array_equal(read_patches(out), toy_generator(sampleset.latents(6, 0, 300, DIM)))


def test_a_folder_of_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="files that are not a sample set"):
        make(tmp_path)
    make(tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("n", [0, -5])
def test_a_non_positive_count_is_refused_before_anything_is_written(tmp_path, n):
    with pytest.raises(UserError, match="--n N with N >= 1"):
        make(tmp_path / "set", toy_spec(n=n))
    assert not (tmp_path / "set").exists()


def test_a_generator_that_returns_nan_is_stopped_with_the_fix(tmp_path):
    def diverged(z):
        patches = toy_generator(z)
        patches[z[:, 0] > 2.0] = np.inf  # a saturated network
        return patches
    first = int(np.argmax(sampleset.latents(SEED, 0, 300, DIM)[:, 0] > 2.0))
    with pytest.raises(UserError, match=f"sample {first};.*use an earlier checkpoint"):
        make(tmp_path / "set", compute=sampleset.gan_compute(diverged, DIM, SEED))
    assert not (tmp_path / "set" / "manifest.json").exists()


def test_verify_catches_a_changed_part(tmp_path):
    out = tmp_path / "set"
    make(out)
    with open(out / "part-00000.h5", "r+b") as fh:
        fh.seek(-4, os.SEEK_END)
        fh.write(b"\x00\x00\x80\x7f")
    with pytest.raises(UserError, match="does not match its sha256"):
        sampleplan.verify(out)


def test_plain_h5py_reads_the_set_from_anywhere_without_cosmotrain(tmp_path):
    out = tmp_path / "set"
    make(out)
    moved = tmp_path / "moved"
    out.rename(moved)
    reader = ("import sys, hashlib, h5py\n"
              "with h5py.File(sys.argv[1], 'r') as h5:\n"
              "    x = h5['patches'][:]\n"
              "assert not any(m.startswith('cosmotrain') for m in sys.modules)\n"
              "print(x.shape, hashlib.sha256(x.tobytes()).hexdigest())\n")
    done = subprocess.run([sys.executable, "-I", "-c", reader, str(moved / "samples.h5")], cwd="/",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    expected = toy_generator(sampleset.latents(SEED, 0, 300, DIM))
    assert done.stdout.split(")")[-1].strip() == __import__("hashlib").sha256(expected.tobytes()).hexdigest()


def test_a_missing_part_reads_as_nan_not_as_zeros(tmp_path):
    out = tmp_path / "set"
    spec = toy_spec()
    make(out, spec)
    parts = [(0, 160), (160, 300)]  # as if the set had two parts, the second one lost
    sampleset.write_virtual(out, spec, parts)
    x = read_patches(out)
    assert np.isnan(x[160:]).all() and np.isfinite(x[:160]).all()


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB filesystem (tmpfs); needs root, as on the project's machines."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_set_larger_than_the_free_space_is_refused_up_front(small_disk):
    with pytest.raises(UserError, match="needs about .* but the disk .* free; free space or choose another --out"):
        make(small_disk / "set", toy_spec(n=3000))  # 3000 x 1 KiB > 2 MiB
    assert not (small_disk / "set").exists()


def test_a_disk_that_fills_up_mid_run_is_an_error_and_the_rerun_resumes(small_disk, tmp_path, monkeypatch):
    monkeypatch.setattr(sampleset, "COMMIT_SECONDS", 0.0)
    out, ballast = small_disk / "set", small_disk / "ballast"
    good = sampleset.gan_compute(toy_generator, DIM, SEED)
    spec = toy_spec(n=1500, batch=50)  # 1.5 MB of samples on a 2 MiB disk

    def filler(a, b):  # another job fills the disk while this one runs
        if a == 500 and not ballast.exists():
            with open(ballast, "wb") as fh:
                try:
                    fh.write(b"\0" * (4 << 20))
                except OSError:
                    pass
        return good(a, b)
    with pytest.raises(UserError, match="disk is full.*rerun the same command to resume"):
        make(out, spec, compute=filler)
    assert not (out / "manifest.json").exists()
    ballast.unlink()
    calls = []
    make(out, spec, compute=counting(calls))
    assert calls and calls[0][0] >= 500  # the batches written before the disk filled are kept
    np.testing.assert_array_equal(read_patches(out), toy_generator(sampleset.latents(SEED, 0, 1500, DIM)))
    assert sampleplan.verify(out)["n"] == 1500


def test_temporary_files_of_a_killed_first_step_do_not_block_the_rerun(tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    (out / ".layout.json.abc123.tmp").write_text("{")  # killed while writing the layout
    make(out)
    assert not list(out.glob(".*.tmp"))
    np.testing.assert_array_equal(read_patches(out), toy_generator(sampleset.latents(SEED, 0, 300, DIM)))
