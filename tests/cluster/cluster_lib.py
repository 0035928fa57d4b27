"""Helpers for the multi-node tests: the cluster's nodes, their processes, their /tmp."""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from slurm_cluster import REPO, Cluster

CLUSTER_DIR = os.environ.get("COSMOTRAIN_CLUSTER_DIR", "/var/tmp/cosmotrain-cluster")
NODES = 4
SCRIPTS = REPO / "scripts" / "cluster"


class MultiNode(Cluster):
    """The cluster of scripts/cluster/up.sh: submit jobs (``Cluster``), fail and restore nodes."""

    def node_tmp(self, node: str) -> Path:
        """The folder that is ``/tmp`` on ``node`` (each node has its own)."""
        return Path(CLUSTER_DIR) / "nodetmp" / node

    def pids(self, node: str) -> list[int]:
        """Every process running on ``node`` (in its network namespace)."""
        out = subprocess.run(["ip", "netns", "pids", f"ctc-{node}"], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def ranks_on(self, node: str) -> list[int]:
        """PIDs of the `cosmotrain` ranks running on ``node`` (python .../bin/cosmotrain ...; not srun or the job shell)."""
        return [p for p in self.pids(node) if _is_rank(_argv(p))]

    def kill_node(self, node: str) -> None:
        """``node`` is lost: its slurmd, job steps and ranks are SIGKILLed (scripts/cluster/node.sh)."""
        subprocess.run(["bash", str(SCRIPTS / "node.sh"), "kill", node], env=self.env(), check=True,
                       capture_output=True)

    def start_node(self, node: str) -> None:
        """Start ``node``'s slurmd again and wait until SLURM has it back in service."""
        subprocess.run(["bash", str(SCRIPTS / "node.sh"), "start", node], env=self.env(), check=True,
                       capture_output=True)
        self.wait_for(lambda: self.node_state(node) in ("idle", "mixed", "allocated"), timeout=120,
                      what=f"{node} back in service")

    def node_state(self, node: str) -> str:
        return subprocess.run(["sinfo", "-h", "-n", node, "-o", "%T"], env=self.env(), capture_output=True,
                              text=True).stdout.strip()

    def job_nodes(self, job_id: str) -> list[str]:
        """The nodes job ``job_id`` runs on, in order."""
        nodelist = self.show(job_id)["NodeList"]
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], env=self.env(), capture_output=True,
                             text=True, check=True).stdout
        return out.split()

    def open_files(self, pid: int) -> list[str]:
        """Paths ``pid`` holds open, as that process sees them (its own /tmp)."""
        found = []
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                found.append(os.readlink(fd))
            except OSError:
                pass
        return found


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_rank(argv: list[str]) -> bool:
    return len(argv) > 1 and Path(argv[0]).name.startswith("python") and Path(argv[1]).name == "cosmotrain"


def seconds_until(predicate, timeout: float, poll: float = 0.2) -> float | None:
    """Seconds until ``predicate()`` is true, or None if it is still false after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(poll)
    return None


def log_lines(log: str, pattern: str) -> list[str]:
    return [line for line in log.splitlines() if re.search(pattern, line)]
