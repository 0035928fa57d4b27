"""Fixtures of the fault tests: real file systems to fill or make read-only, and small real runs.

Every test in this folder is marked ``faults`` (``make fault-test``; ``make test`` leaves
them out). Mounting a tmpfs needs root; without it those tests are skipped, saying so.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from faultlib import CLASSIFIER, GAN, cli
from testlib import toy_cmb, toy_galaxies


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def mount(tmp_path):
    """``mount(size, read_only=False, fill=None)``: a fresh tmpfs of ``size`` (e.g. "8m") under
    ``tmp_path``; ``fill(path)`` puts files in it before it is remounted read-only. Unmounted
    at the end of the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = []

    def make(size: str, read_only: bool = False, fill=None, name: str | None = None) -> Path:
        path = tmp_path / (name or f"mnt{len(mounted)}")
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
        mounted.append(path)
        if fill is not None:
            fill(path)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        return path

    yield make
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="session")
def galaxies(tmp_path_factory) -> Path:
    """A small learnable galaxies dataset (16x16 images: 384 train, 64 val, 96 test)."""
    from cosmotrain.data import shards

    root = tmp_path_factory.mktemp("faults") / "galaxies"
    splits = {"train": toy_galaxies(384, 1), "val": toy_galaxies(64, 2), "test": toy_galaxies(96, 3)}
    shards.write_dataset(root, "galaxies", splits, {"class_names": ["round", "edge-on", "spiral"], "threshold": 0.9,
                                                    "source": "test"}, config={}, seed=0, samples_per_shard=100)
    return root


@pytest.fixture(scope="session")
def classifier_run(tmp_path_factory, galaxies) -> Path:
    """A finished 2-epoch classifier run on ``galaxies`` (one process)."""
    run = tmp_path_factory.mktemp("faults") / "clf"
    out = cli("train", "classifier", *CLASSIFIER, "--data", galaxies, "--out", run)
    assert out.returncode == 0, out.stderr[-3000:]
    return run


@pytest.fixture(scope="session")
def cmb(tmp_path_factory) -> Path:
    """128 toy CMB patches of 32x32 (8' pixels)."""
    return toy_cmb(tmp_path_factory.mktemp("faults") / "cmb")


@pytest.fixture(scope="session")
def gan_run(tmp_path_factory, cmb) -> Path:
    """A finished 6-step GAN run on ``cmb`` (one process)."""
    run = tmp_path_factory.mktemp("faults") / "gan"
    out = cli("train", "gan", *GAN, "--data", cmb, "--out", run)
    assert out.returncode == 0, out.stderr[-3000:]
    return run


@pytest.fixture
def copy_of(tmp_path):
    """``copy_of(folder)``: a private copy of a session fixture's folder, to damage at will."""
    def make(folder: Path) -> Path:
        target = tmp_path / f"copy-{folder.name}"
        shutil.copytree(folder, target, symlinks=True)
        return target
    return make
