"""Threads per rank: SLURM's allocation when SLURM started the rank, else the affinity mask."""
import os

import pytest

from cosmotrain import placement

SLURM = ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE", "SLURM_TASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE",
         "SLURM_NODEID")


@pytest.fixture
def slurm(monkeypatch):
    for var in SLURM:
        monkeypatch.delenv(var, raising=False)
    return lambda **env: [monkeypatch.setenv(k, v) for k, v in env.items()]


@pytest.fixture
def whole_machine(monkeypatch):
    """An unbound rank: the mask is every core (what SLURM's task/none leaves). 8 cores."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(os, "cpu_count", lambda: 8)


def test_cpus_per_task_wins_over_the_mask(slurm, whole_machine):
    slurm(SLURM_CPUS_PER_TASK="1", SLURM_CPUS_ON_NODE="8")
    assert placement.cores_per_rank(local_size=1) == 1


def test_the_nodes_cpus_are_shared_by_its_tasks(slurm, whole_machine):
    slurm(SLURM_CPUS_ON_NODE="6")
    assert placement.cores_per_rank(local_size=2) == 3
    assert placement.cores_per_rank(local_size=12) == 1  # never below one


def test_a_rank_bound_to_fewer_cores_than_slurm_gave_uses_its_mask(slurm, monkeypatch):
    slurm(SLURM_CPUS_PER_TASK="4")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert placement.cores_per_rank(local_size=1) == 2


def test_outside_slurm_the_mask_is_shared_out_when_it_is_the_whole_machine(slurm, whole_machine):
    assert placement.cores_per_rank(local_size=1) == 8
    assert placement.cores_per_rank(local_size=4) == 2


@pytest.mark.parametrize("tasks,node,count", [("2(x3),1", "0", 2), ("2(x3),1", "3", 1), ("4", "0", 4),
                                              ("1,3", "1", 3), ("garbled", "0", None), ("2(x2)", "5", None)])
def test_tasks_on_this_node_from_slurms_compressed_list(slurm, tasks, node, count):
    slurm(SLURM_STEP_TASKS_PER_NODE=tasks, SLURM_NODEID=node)
    assert placement.slurm_tasks_on_node() == count
