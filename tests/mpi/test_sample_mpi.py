"""Sample sets on real Open MPI ranks: rank-count independence, a really killed rank, resume.

The model is a fixed-weight NumPy dense network; a rank is killed with SIGKILL, either by
itself at a chosen batch (KILL_RANK/KILL_AT, read by the test script below, not by
cosmotrain) or from outside at whatever moment the test's poll happens to land.
"""
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from testlib import mpi_env, run_mpi_python

pytestmark = pytest.mark.mpi

N, BATCH, SEED = 600, 20, 11

SCRIPT = """
import os, signal, sys, time
import numpy as np
from cosmotrain import dist, logs, sampleset
ctx = dist.init_mpi()
logs.setup()
sampleset.COMMIT_SECONDS = 0.0  # mark each batch done as soon as it is on disk
out, n, batch, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
kill_rank, kill_at = int(os.environ.get("KILL_RANK", -1)), int(os.environ.get("KILL_AT", -1))
delay = float(os.environ.get("DELAY", 0))
W = np.random.default_rng(3).standard_normal((8, 256)).astype(np.float32) / 3

def generator(z):
    return (100 * np.tanh(z @ W)).reshape(len(z), 16, 16).astype(np.float32)

good = sampleset.gan_compute(generator, 8, seed)

def compute(a, b):
    if ctx.rank == kill_rank and a >= kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(delay)
    return good(a, b)

spec = sampleset.Spec("gan-samples", n, batch, {"patches": ("float32", (16, 16))},
                   identity={"model_sha256": "toy", "seed": seed, "latent_dim": 8},
                   attrs={"patches": {"units": "uK_CMB"}})
sampleset.produce(out, spec, compute, desc="toy")
"""


def produce(out, np_, **env):
    extra = {k: str(v) for k, v in env.items()}
    return run_mpi_python(SCRIPT, np_=np_, args=(out, N, BATCH, SEED), env=mpi_env(**extra), timeout=120)


def patches(out):
    with h5py.File(out / "samples.h5", "r") as h5:
        return h5["patches"][:]


def sha(path):
    from cosmotrain.files import sha256
    return sha256(path)


def done_samples(out):
    """Samples already marked done in the parts of a killed run."""
    layout = json.loads((out / "layout.json").read_text())
    total = 0
    for p, (a, b) in enumerate(layout["parts"]):
        path = out / f"part-{p:05d}.h5"
        if path.is_file():
            with h5py.File(path, "r") as h5:
                done = h5["done"][:]
            total += sum(min(BATCH, b - a - k * BATCH) for k in np.flatnonzero(done))
    return total


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Uninterrupted runs on 1 and on 2 ranks."""
    root = tmp_path_factory.mktemp("reference")
    for np_ in (1, 2):
        done = produce(root / f"np{np_}", np_)
        assert done.returncode == 0, done.stderr
    return root / "np1", root / "np2"


def test_one_and_two_ranks_make_the_same_samples(references):
    one, two = references
    assert sorted(p.name for p in two.glob("part-*.h5")) == ["part-00000.h5", "part-00001.h5"]
    assert len(list(one.glob("part-*.h5"))) == 1
    np.testing.assert_array_equal(patches(one), patches(two))
    manifest = json.loads((two / "manifest.json").read_text())
    assert [(p["start"], p["stop"]) for p in manifest["parts"]] == [(0, 300), (300, 600)]
    assert all(p["sha256"] == sha(two / p["file"]) for p in manifest["parts"])


def test_rank_zero_progress_counts_every_rank(tmp_path):
    done = produce(tmp_path / "set", 2, COSMOTRAIN_PROGRESS_SECONDS=0)
    assert done.returncode == 0, done.stderr
    assert "INFO toy: 100% (600/600 samples)" in done.stderr


def test_a_killed_rank_then_the_same_command_gives_identical_files(references, tmp_path):
    _, two = references
    out = tmp_path / "set"
    killed = produce(out, 2, KILL_RANK=1, KILL_AT=400)
    assert killed.returncode != 0 and not (out / "manifest.json").exists()
    before = done_samples(out)
    assert 100 <= before < N  # rank 1 had finished 300:400 when it died
    again = produce(out, 2)
    assert again.returncode == 0, again.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["timing"]["produced"] == N - before  # only what was missing
    for name in ("part-00000.h5", "part-00001.h5", "samples.h5"):
        assert sha(out / name) == sha(two / name), name


def test_a_killed_two_rank_set_can_be_finished_by_one_rank(references, tmp_path):
    one, two = references
    out = tmp_path / "set"
    assert produce(out, 2, KILL_RANK=0, KILL_AT=100).returncode != 0
    finished = produce(out, 1)
    assert finished.returncode == 0, finished.stderr
    assert sha(out / "part-00001.h5") == sha(two / "part-00001.h5")  # the first run's layout is kept
    np.testing.assert_array_equal(patches(out), patches(one))


def _rank_pid(launcher_pid, rank):
    """The pid of MPI rank ``rank`` among the processes below ``launcher_pid``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == launcher_pid and f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return int(entry)
    return None


def test_a_rank_killed_from_outside_at_any_moment_is_resumed_exactly(references, tmp_path):
    _, two = references
    out = tmp_path / "set"
    cmd = ["mpirun", "-np", "2", "--bind-to", "none", sys.executable, "-c", SCRIPT, str(out), str(N),
           str(BATCH), str(SEED)]
    job = subprocess.Popen(cmd, env=mpi_env(DELAY="0.03"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    victim = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and job.poll() is None:
        victim = victim or _rank_pid(job.pid, 1)
        if victim and (out / "part-00001.h5").is_file():
            with h5py.File(out / "part-00001.h5", "r") as h5:
                if h5["done"][:].sum() >= 3:
                    os.kill(victim, signal.SIGKILL)  # lands mid-batch, mid-write or mid-commit
                    break
        time.sleep(0.01)
    job.communicate(timeout=60)
    assert job.returncode != 0 and not (out / "manifest.json").exists()
    again = produce(out, 2)
    assert again.returncode == 0, again.stderr
    for name in ("part-00000.h5", "part-00001.h5", "samples.h5"):
        assert sha(out / name) == sha(two / name), name


# ---------------------------------------------------------------- validate samples over ranks

SIDE, RESO, PAD = 32, 8.0, 2

GAUSSIAN = """
import os, sys
import numpy as np
from cosmotrain import dist, logs, sampleset
from cosmotrain.science import spectra
ctx = dist.init_mpi()
logs.setup()
out, n, gain = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
side, reso, pad = {side}, {reso}, {pad}
big = (pad * side, pad * side)
ell = np.arange(3000.0)
cl = 1e3 * ((ell + 10.0) / 100.0) ** -2.5
amplitude = np.sqrt(np.interp(spectra.mode_ells(big, reso) - 0.5, ell, cl)) / (reso * spectra.ARCMIN)

def generator(z):
    # white noise [B, 2H, 2W] filtered to the spectrum, cut to a corner: the same recipe as
    # spectra.gaussian_patches, so gain 1 is a perfect generator of the reference's patches
    field = np.fft.irfft2(np.fft.rfft2(z.reshape(len(z), *big).astype(np.float64)) * amplitude, s=big)
    return (gain * field[:, :side, :side]).astype(np.float32)

spec = sampleset.Spec("gan-samples", n, 50, {{"patches": ("float32", (side, side))}},
                   identity={{"model_sha256": f"gaussian-gain-{{gain}}", "seed": 3, "latent_dim": big[0] * big[1]}},
                   attrs={{"patches": {{"units": "uK_CMB", "reso_arcmin": reso}}}})
sampleset.produce(out, spec, sampleset.gan_compute(generator, big[0] * big[1], 3))
""".format(side=SIDE, reso=RESO, pad=PAD)


@pytest.fixture(scope="module")
def gaussian_reference(tmp_path_factory):
    """A CMB dataset of Gaussian patches with the spectrum the GAUSSIAN script uses: train 800, test 400."""
    import reference
    from cosmotrain.data import shards

    root = tmp_path_factory.mktemp("gaussian") / "cmb"
    ell = np.arange(3000.0)
    cl = 1e3 * ((ell + 10.0) / 100.0) ** -2.5
    rng = np.random.default_rng(8)

    def split(n, first_sky):
        patches = reference.gaussian_patches(cl, n, (SIDE, SIDE), RESO, rng, pad=PAD).astype(np.float32)
        return {"patches": patches, "centers": np.zeros((n, 2)),
                "sky": (first_sky + np.arange(n) // 100).astype(np.int32)}  # 100 patches per "sky"
    shards.write_dataset(root, "cmb", {"train": split(800, 0), "test": split(400, 8)},
                         {"reso_arcmin": RESO, "lmax": 2999, "units": "uK_CMB"}, config={}, seed=8)
    return root


def gaussian_set(out, gain):
    done = run_mpi_python(GAUSSIAN, np_=2, args=(out, 600, gain))
    assert done.returncode == 0, done.stderr
    return out


def validate(samples, reference, np_, *extra, code=0):
    from testlib import run_cli

    done = run_cli("validate", "samples", samples, "--reference", reference, "--batch", "128", *extra, np_=np_)
    assert done.returncode == code, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_referee_sums_over_ranks_and_passes_a_perfect_generator(gaussian_reference, tmp_path):
    samples = gaussian_set(tmp_path / "perfect", 1.0)
    one, two = validate(samples, gaussian_reference, 1), validate(samples, gaussian_reference, 2, "--strict")
    for name, p in one["p_values"].items():
        assert two["p_values"][name] == pytest.approx(p, rel=1e-6, abs=1e-9), name
    assert two["pass"] and two["failed"] == []
    report = json.loads((samples / "validation" / "validation.json").read_text())
    assert report["samples"]["n"] == 600 and report["reference"]["n"] == 400 and report["reference"]["split"] == "test"
    assert set(report["tests"]) == {"band_powers", "rings", "scatter", "one_point", "pixel_pdf", "minkowski",
                                    "memorisation", "diversity"}
    for test in report["tests"].values():
        assert {"statistic", "p_value", "threshold", "pass", "what"} <= set(test)
    assert (samples / "validation" / "validation.png").stat().st_size > 50_000


def test_the_referee_fails_a_generator_with_the_wrong_amplitude_and_strict_exits_1(gaussian_reference, tmp_path):
    samples = gaussian_set(tmp_path / "loud", 1.1)
    summary = validate(samples, gaussian_reference, 2)  # exit 0 whatever the verdict ...
    assert not summary["pass"] and {"band_powers", "one_point"} <= set(summary["failed"])
    validate(samples, gaussian_reference, 2, "--strict", "--out", tmp_path / "strict.json", code=1)  # ... but --strict
    assert json.loads((tmp_path / "strict.json").read_text())["pass"] is False


def test_the_referee_sees_copies_of_training_patches(gaussian_reference, tmp_path):
    import h5py

    from cosmotrain.data.reader import ShardSet

    train = ShardSet(gaussian_reference, "train").read(0, 600)["patches"]
    with h5py.File(tmp_path / "copies.h5", "w") as h5:
        h5.create_dataset("patches", data=np.rot90(train, 1, axes=(1, 2)).copy()).attrs["reso_arcmin"] = RESO
    summary = validate(tmp_path / "copies.h5", gaussian_reference, 1)
    assert summary["failed"] == ["memorisation"], summary  # real patches in every other respect
    assert (tmp_path / "copies.validation.json").is_file()


def test_a_file_of_another_pixel_size_is_one_line_with_the_fix(gaussian_reference, tmp_path):
    import h5py

    from testlib import run_cli

    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5.create_dataset("patches", data=np.zeros((10, SIDE, SIDE), np.float32)).attrs["reso_arcmin"] = 4.0
    done = run_cli("validate", "samples", tmp_path / "other.h5", "--reference", gaussian_reference, np_=2)
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert done.returncode == 2 and errors and all("pixels of 4'" in e and "same pixel size" in e for e in errors)


def test_validation_refuses_a_part_that_changed(gaussian_reference, tmp_path):
    from testlib import run_cli

    samples = gaussian_set(tmp_path / "set", 1.0)
    with open(samples / "part-00001.h5", "r+b") as fh:
        fh.seek(4096)
        fh.write(b"\x01\x02\x03\x04")
    done = run_cli("validate", "samples", samples, "--reference", gaussian_reference, np_=2)
    assert done.returncode != 0
    assert f"{samples / 'part-00001.h5'} does not match its sha256 in the manifest" in done.stderr
