"""scripts/cluster/ without starting a cluster: lint and the refusals a user meets first.

Fast, so they run in `make test`; the cluster itself is exercised by test_multinode.py
(`make cluster-test`).
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "scripts" / "cluster").glob("*.sh"))


def script(name: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts/cluster" / name), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck missing (apt-get install shellcheck)")
def test_scripts_pass_shellcheck():
    res = subprocess.run(["shellcheck", "-x", *map(str, SCRIPTS)], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="up.sh checks for root first")
def test_up_refuses_a_state_folder_under_tmp(tmp_path):
    res = script("up.sh", "2", COSMOTRAIN_CLUSTER_DIR="/tmp/somewhere")
    assert res.returncode == 1
    assert res.stderr.strip() == ("cluster: error: COSMOTRAIN_CLUSTER_DIR=/tmp/somewhere is under /tmp, which every "
                                  "node replaces with its own; pick another folder")


def test_up_refuses_a_bad_node_count():
    res = script("up.sh", "zero")
    assert res.returncode == 1 and "N must be a node count from 1 to 99, got 'zero'" in res.stderr


def test_node_and_shape_name_their_usage_and_touch_nothing_without_a_cluster(tmp_path):
    empty = {"COSMOTRAIN_CLUSTER_DIR": str(tmp_path)}
    res = script("node.sh", "kill", "n9", **empty)
    assert res.returncode == 1 and "node n9 is not part of the cluster" in res.stderr
    res = script("shape.sh", "fast", **empty)
    assert res.returncode == 1 and "usage: shape.sh MBIT" in res.stderr
    res = script("down.sh", **empty)
    assert res.returncode == 0 and "nothing to do" in res.stderr
