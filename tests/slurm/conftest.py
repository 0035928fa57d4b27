"""A real one-node SLURM cluster for the job-script tests, up for the whole session.

`scripts/slurm/up.sh` starts munged + slurmctld + slurmd on localhost (state in its own
directory); `scripts/slurm/down.sh` stops them by their pid files at the end, unless the
cluster was already running when the session started (then it is left as it was).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from slurm_cluster import REPO, SLURM_DIR, Cluster


def _running() -> bool:
    pid = Path(SLURM_DIR) / "slurmctld.pid"
    try:
        os.kill(int(pid.read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="session")
def slurm() -> Cluster:
    """munged + slurmctld + slurmd on localhost, for the whole test session."""
    if os.geteuid() != 0:
        pytest.skip("the localhost SLURM cluster needs root (slurmd starts jobs as their users)")
    env = dict(os.environ, COSMOTRAIN_SLURM_DIR=SLURM_DIR)
    was_running = _running()
    up = subprocess.run(["bash", str(REPO / "scripts/slurm/up.sh")], env=env, text=True, capture_output=True)
    if up.returncode != 0:
        pytest.fail(f"scripts/slurm/up.sh failed:\n{up.stderr}")
    try:
        yield Cluster(up.stdout.strip().splitlines()[-1])
    finally:
        if not was_running:
            subprocess.run(["bash", str(REPO / "scripts/slurm/down.sh")], env=env, check=False)
