"""A real multi-node SLURM cluster on this machine, up for the whole session (make cluster-test).

`scripts/cluster/up.sh 4` makes four nodes (network namespaces n1..n4 with their own IP,
hostname, /tmp and /dev/shm) with one slurmd each, one slurmctld and munged;
`scripts/cluster/down.sh` removes exactly what it made, at the end, unless the cluster was
already up when the session started. The nodes share every path but /tmp and /dev/shm, so
pytest's --basetemp must lie outside /tmp (scripts/cluster/test.sh sees to it).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slurm"))  # slurm_cluster: submit, wait, logs

from cluster_lib import CLUSTER_DIR, NODES, REPO, MultiNode  # noqa: E402


def _up() -> bool:
    """True when a cluster of NODES nodes is already recorded in CLUSTER_DIR."""
    nodes = Path(CLUSTER_DIR) / "nodes"
    return (Path(CLUSTER_DIR) / "created").is_file() and nodes.is_file() and nodes.read_text().strip() == str(NODES)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> MultiNode:
    """Four SLURM nodes on this machine, for the whole session."""
    if os.geteuid() != 0:
        pytest.skip("the multi-node cluster needs root (network namespaces; slurmd starts jobs as their users)")
    base = tmp_path_factory.getbasetemp().resolve()
    if base == Path("/tmp") or Path("/tmp") in base.parents:
        pytest.fail(f"pytest's --basetemp {base} is under /tmp, which every node replaces with its own: run "
                    f"scripts/cluster/test.sh (make cluster-test), or pass --basetemp outside /tmp")
    env = dict(os.environ, COSMOTRAIN_CLUSTER_DIR=CLUSTER_DIR)
    was_up = _up()
    up = subprocess.run(["bash", str(REPO / "scripts/cluster/up.sh"), str(NODES)], env=env, text=True,
                        capture_output=True)
    if up.returncode != 0:
        pytest.fail(f"scripts/cluster/up.sh failed:\n{up.stderr}")
    try:
        yield MultiNode(up.stdout.strip().splitlines()[-1])
    finally:
        if not was_up:
            subprocess.run(["bash", str(REPO / "scripts/cluster/down.sh")], env=env, check=False)
