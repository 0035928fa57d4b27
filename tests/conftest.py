"""Fixtures shared by all test folders; helpers live in testlib.py."""
import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="session")
def checksum_cache(tmp_path_factory):
    """Keep the verified-shard cache of every test (and of the processes tests start) out of ~/.cache."""
    import os

    os.environ["COSMOTRAIN_CACHE"] = str(tmp_path_factory.mktemp("cosmotrain-cache"))
    yield


@pytest.fixture
def tiny_galaxies(tmp_path):
    """A small valid galaxies dataset written through the real shard writer."""
    from cosmotrain.data import shards

    rng = np.random.default_rng(0)

    def split(n, start):
        return {"images": rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8),
                "labels": (np.arange(n) % 3).astype(np.int8),
                "vote_fractions": np.eye(3, dtype=np.float32)[np.arange(n) % 3],
                "ids": np.arange(start, start + n, dtype=np.int64)}

    root = tmp_path / "gal"
    shards.write_dataset(root, "galaxies", {"train": split(103, 0), "val": split(10, 1000)},
                         {"class_names": ["round", "edge-on", "spiral"], "threshold": 0.9, "source": "test"},
                         config={"n": 113}, seed=0, samples_per_shard=40)
    return root
