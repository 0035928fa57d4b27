"""The job scripts and the training across nodes of a real SLURM cluster (make cluster-test).

Four nodes on this machine (tests/cluster/conftest.py): every job script runs with -N 2,
training also with -N 4, one rank per node; a run on 2 nodes x 1 rank ends with the same
weights, bit for bit, as one on 1 node x 2 ranks; a node lost mid-training ends the job and
the requeued job resumes; each node stages its own shards to its own /tmp; each rank sizes
its threads by SLURM's allocation.
"""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from cluster_lib import MultiNode, log_lines, seconds_until
from slurm_cluster import REPO, VENV

from cosmotrain import placement
from cosmotrain.data import epochs
from cosmotrain.data.staging import FOLDER, needed_files
from cosmotrain.files import sha256

pytestmark = pytest.mark.cluster
N_GALAXIES = 600
PER_SHARD = 40  # 12 training shards: each node's ranks read only some of them
EPOCHS = 2
CLASSIFIER_ARGS = ["--set", f"train.epochs={EPOCHS}"]
GAN_ARGS = ["--set", "train.steps=40", "--set", "train.checkpoint_every=20", "--set", "monitor.every=40"]
ONE_PER_NODE = ["--ntasks-per-node=1", "--cpus-per-task=1"]
STAGE = "/tmp/stage"  # each node's own /tmp


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("multinode")


def env(cluster: MultiNode, work: Path, **extra: str) -> dict:
    return cluster.env(COSMOTRAIN_WORK=str(work / "work"), COSMOTRAIN_VENV=str(VENV), **extra)


def job(cluster: MultiNode, work: Path, script: str, nodes: int, flags=(), args=(), **extra):
    """Run jobs/SCRIPT.sbatch on ``nodes`` nodes, one rank each unless ``flags`` say otherwise; it must succeed."""
    done = cluster.run(script, work / "logs", flags=["-N", str(nodes), *ONE_PER_NODE, *flags], args=list(args),
                       env=env(cluster, work, **extra))
    assert done.rc == 0, f"jobs/{script}.sbatch -N {nodes} failed (exit {done.rc}):\n{done.log[-4000:]}"
    return done


def ran_on(cluster: MultiNode, job_id: str) -> list[str]:
    return cluster.job_nodes(job_id)


@pytest.fixture(scope="module")
def galaxies(cluster, work) -> Path:
    # The simple generator labels every galaxy, so every shard is read (the staging tests count
    # the shards each node reads; the survey generator's unkept galaxies are never read).
    done = job(cluster, work, "prepare_galaxies", 2, args=["--set", f"dataset.samples_per_shard={PER_SHARD}",
                                                           "--set", "synthetic.generator=simple"],
               COSMOTRAIN_N_GALAXIES=str(N_GALAXIES))
    assert len(ran_on(cluster, done.id)) == 2 and "on 2 ranks" in done.log, done.log[-2000:]
    return work / "work/data/galaxies"


@pytest.fixture(scope="module")
def cmb(cluster, work) -> Path:
    done = job(cluster, work, "simulate_cmb", 2, COSMOTRAIN_CONFIG=f"{REPO}/configs/cmb_tiny.yaml")
    assert len(ran_on(cluster, done.id)) == 2
    return work / "work/data/cmb"


@pytest.fixture(scope="module")
def classifier_2x1(cluster, work, galaxies) -> Path:
    """The classifier trained on 2 nodes x 1 rank."""
    run = work / "work/runs/classifier-2x1"
    done = job(cluster, work, "train_classifier", 2, args=CLASSIFIER_ARGS,
               COSMOTRAIN_CONFIG=f"{REPO}/configs/classifier_tiny.yaml", COSMOTRAIN_CLASSIFIER_RUN=str(run))
    assert len(ran_on(cluster, done.id)) == 2
    return run


@pytest.fixture(scope="module")
def gan_run(cluster, work, cmb) -> Path:
    done = job(cluster, work, "train_gan", 2, args=GAN_ARGS, COSMOTRAIN_CONFIG=f"{REPO}/configs/gan_tiny.yaml")
    assert len(ran_on(cluster, done.id)) == 2
    return work / "work/runs/gan"


def test_prepare_and_simulate_on_two_nodes(galaxies, cmb):
    for dataset in (galaxies, cmb):
        manifest = json.loads((dataset / "manifest.json").read_text())
        for split in manifest["splits"].values():
            assert all(sha256(dataset / s["file"]) == s["sha256"] for s in split["shards"])


def test_train_classifier_on_two_nodes(classifier_2x1):
    metrics = json.loads((classifier_2x1 / "metrics.json").read_text())
    assert metrics["ranks"] == 2 and metrics["epochs"] == EPOCHS and metrics["weights_identical_across_ranks"]


def test_train_gan_on_two_nodes(gan_run):
    metrics = json.loads((gan_run / "metrics.json").read_text())
    assert any((gan_run / "checkpoints").iterdir()) and metrics, metrics


def test_sample_gan_on_two_nodes(cluster, work, gan_run):
    done = job(cluster, work, "sample_gan", 2, COSMOTRAIN_N_SAMPLES="256")
    out = work / "work/samples/gan"
    assert len(ran_on(cluster, done.id)) == 2 and len(list(out.glob("part-*.h5"))) == 2  # one part per rank
    with h5py.File(out / "samples.h5") as f:
        assert any(d.shape[0] == 256 for d in f.values() if isinstance(d, h5py.Dataset)), dict(f)


def test_predict_classifier_on_two_nodes(cluster, work, classifier_2x1):
    done = job(cluster, work, "predict_classifier", 2, args=["--batch", "16"],
               COSMOTRAIN_CLASSIFIER_RUN=str(classifier_2x1))
    assert len(ran_on(cluster, done.id)) == 2 and any((work / "work/predictions/classifier").iterdir())


def test_two_nodes_one_rank_each_match_one_node_two_ranks_bit_for_bit(cluster, work, classifier_2x1):
    run = work / "work/runs/classifier-1x2"
    done = job(cluster, work, "train_classifier", 1, flags=["--ntasks-per-node=2"], args=CLASSIFIER_ARGS,
               COSMOTRAIN_CONFIG=f"{REPO}/configs/classifier_tiny.yaml", COSMOTRAIN_CLASSIFIER_RUN=str(run))
    assert len(ran_on(cluster, done.id)) == 1
    across, within = checkpoint_arrays(classifier_2x1), checkpoint_arrays(run)
    assert across.keys() == within.keys() and len(across) > 4
    different = [name for name in across if not np.array_equal(across[name], within[name])]
    assert not different, f"weights differ between 2 nodes x 1 rank and 1 node x 2 ranks: {different}"


def checkpoint_arrays(run: Path) -> dict:
    """Every numeric array of a run's newest checkpoint (model and optimizer), plus its name."""
    import tensorflow as tf

    prefix = tf.train.latest_checkpoint(str(run / "checkpoints"))
    assert prefix, f"no checkpoint in {run}/checkpoints"
    reader = tf.train.load_checkpoint(prefix)
    arrays = {k: np.asarray(reader.get_tensor(k)) for k in reader.get_variable_to_shape_map()
              if "save_counter" not in k and "OBJECT_GRAPH" not in k}
    return {"checkpoint": Path(prefix).name, **{k: v for k, v in arrays.items() if v.dtype.kind in "biuf"}}


# ---------------------------------------------------------------- node-local staging

def test_training_on_four_nodes_stages_each_nodes_shards_once(cluster, work, galaxies):
    run = work / "work/runs/classifier-4x1"
    done = job(cluster, work, "train_classifier", 4, args=[*CLASSIFIER_ARGS, "--set", f"data.stage_dir={STAGE}"],
               COSMOTRAIN_CONFIG=f"{REPO}/configs/classifier_tiny.yaml", COSMOTRAIN_CLASSIFIER_RUN=str(run))
    nodes = ran_on(cluster, done.id)
    assert len(nodes) == 4 and json.loads((run / "metrics.json").read_text())["ranks"] == 4
    lines = log_lines(done.log, r"staging: node n\d \(rank \d\): copied \d+ shard")
    assert len(lines) == 4, f"expected one staging line per node:\n{done.log[-3000:]}"
    manifest = json.loads((galaxies / "manifest.json").read_text())
    for line in lines:
        node, rank = re.search(r"node (n\d) \(rank (\d)\)", line).groups()
        staged = next((cluster.node_tmp(node) / "stage" / FOLDER).iterdir())
        copies = {p.name for p in staged.glob("*.h5") if not p.is_symlink()}
        assert copies == needed_files(manifest, classifier_reads(manifest, 4), [int(rank)]), line
        assert len(copies) < len(list(galaxies.glob("train-*.h5"))) + 2, "a node copied shards it never reads"
        digests = {s["file"]: s["sha256"] for split in manifest["splits"].values() for s in split["shards"]}
        assert all(sha256(staged / name) == digests[name] for name in copies)
        assert f"copied {len(copies)} shard(s)" in line


def classifier_reads(manifest: dict, size: int) -> dict:
    """What each of ``size`` ranks of classifier_tiny reads: its epoch slices, its share of val."""
    from cosmotrain import config
    from cosmotrain.train.classifier import ClassifierConfig

    seed = config.load(ClassifierConfig, REPO / "configs/classifier_tiny.yaml").train.seed
    n_train, n_val = manifest["splits"]["train"]["n"], manifest["splits"]["val"]["n"]
    return {"train": lambda r: [run for e in range(EPOCHS) for run in epochs.epoch_runs(n_train, r, size, seed, e)],
            "val": lambda r: [placement.split_range(n_val, r, size)]}


def test_a_corrupted_shard_stops_a_staged_run_on_every_rank(cluster, work, galaxies, tmp_path):
    bad = tmp_path / "galaxies"
    subprocess.run(["cp", "-r", str(galaxies), str(bad)], check=True)
    with h5py.File(bad / "val-00000-of-00002.h5", "r+") as f:  # rank 0 hashes it: valid HDF5, wrong bytes
        f["images"][0, 0, 0, 0] ^= 1
    run = tmp_path / "run"
    proc = subprocess.run(["srun", "-N", "2", *ONE_PER_NODE, "--mpi=pmix", str(VENV / "bin/cosmotrain"), "train",
                           "classifier", "--config", f"{REPO}/configs/classifier_tiny.yaml", "--data", str(bad),
                           "--out", str(run), "--set", f"data.stage_dir={STAGE}-bad"],
                          env=cluster.env(), capture_output=True, text=True, timeout=600)
    errors = [line for line in proc.stderr.splitlines() if "error:" in line and "sha256" in line]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert {re.search(r"\[rank (\d)\]", e).group(1) for e in errors} == {"0", "1"}, proc.stderr[-3000:]
    assert "val-00000-of-00002.h5 does not match its sha256" in errors[0]
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())


# ---------------------------------------------------------------- a node lost mid-training

def history_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def test_a_lost_node_ends_the_job_and_the_requeued_job_resumes(cluster, work, galaxies):
    run, total = work / "work/runs/classifier-lost-node", 30
    job_id = cluster.submit("train_classifier", work / "logs", flags=["-N", "2", *ONE_PER_NODE],
                            args=["--set", f"train.epochs={total}", "--set", f"data.stage_dir={STAGE}"],
                            env=env(cluster, work, COSMOTRAIN_CONFIG=f"{REPO}/configs/classifier_tiny.yaml",
                                    COSMOTRAIN_CLASSIFIER_RUN=str(run)))
    history = run / "history.csv"
    cluster.wait_for(lambda: len(history_rows(history)) >= 3, timeout=600, what=f"three epochs in {history}")
    first, lost = cluster.job_nodes(job_id)
    survivor = cluster.ranks_on(first)
    assert survivor, f"no rank found on {first}"
    assert any(f.startswith(f"{STAGE}/{FOLDER}/") for f in cluster.open_files(survivor[0])), \
        "the rank does not read its node-local copies"
    logged = len(history_rows(history))
    try:
        cluster.kill_node(lost)
        ended = seconds_until(lambda: not cluster.ranks_on(first) and cluster.show(job_id)["JobState"] != "RUNNING",
                              timeout=30)
        assert ended is not None, f"30 s after {lost} was lost the job still runs: {cluster.show(job_id)}"
        cluster.wait_for(lambda: int(cluster.show(job_id)["Restarts"]) >= 1, timeout=60, what="the requeue")
        rc = cluster.wait(job_id, timeout=900)
    finally:
        cluster.start_node(lost)
    log = cluster.log(work / "logs", job_id)
    assert "DUE TO NODE FAILURE" in log, log[-4000:]
    assert rc == 0, log[-4000:]
    resumed = re.search(r"resumed from \S+: (\d+) epoch\(s\)", log)
    assert resumed and int(resumed.group(1)) >= logged - 1, log[-4000:]  # the last checkpoint at the kill
    assert lost not in cluster.job_nodes(job_id)
    rows = history_rows(history)
    assert [int(r["epoch"]) for r in rows] == list(range(1, total + 1))
    assert json.loads((run / "metrics.json").read_text())["epochs"] == total


# ---------------------------------------------------------------- threads per rank

PROBE = ("import json, os, socket; from cosmotrain import dist; ctx = dist.init_horovod(); import tensorflow as tf; "
         "print(json.dumps({'host': socket.gethostname(), 'threads': ctx.threads, "
         "'intra': tf.config.threading.get_intra_op_parallelism_threads(), 'omp': os.environ['OMP_NUM_THREADS'], "
         "'mask': len(os.sched_getaffinity(0))}), flush=True)")


CPUS = os.cpu_count()  # each node's affinity mask: the whole machine (SLURM's task/none binds nothing)


@pytest.mark.parametrize("flags,hosts,threads", [
    (["-N", "2", "--ntasks-per-node=1", "--cpus-per-task=1"], 2, 1),  # SLURM_CPUS_PER_TASK
    (["-N", "2", "--ntasks-per-node=1", "--cpus-per-task=2"], 2, 2),
    (["-N", "2", "--ntasks-per-node=1"], 2, 1),  # SLURM_CPUS_ON_NODE (1 CPU per task) / 1 task
    (["-N", "1", "--ntasks-per-node=2"], 1, 1),  # SLURM_CPUS_ON_NODE (2) / 2 tasks
], ids=["cpus-per-task-1", "cpus-per-task-2", "node-cpus-one-task", "node-cpus-two-tasks"])
def test_threads_follow_slurms_allocation(cluster, flags, hosts, threads):
    proc = subprocess.run(["srun", *flags, "--mpi=pmix", sys.executable, "-c", PROBE], env=cluster.env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len({r["host"] for r in ranks}) == hosts and all(r["mask"] == CPUS for r in ranks)  # task/none: whole node
    assert {(r["threads"], r["intra"], r["omp"]) for r in ranks} == {(threads, threads, str(threads))}, ranks


@pytest.mark.parametrize("cores", [1, 2])
def test_threads_follow_the_affinity_mask_outside_slurm(cluster, cores):
    clean = {k: v for k, v in cluster.env().items() if not k.startswith(("SLURM_", "OMP_", "OPENBLAS_", "MKL_"))}
    proc = subprocess.run(["taskset", "-c", ",".join(map(str, range(cores))), sys.executable, "-c", PROBE],
                          env=clean, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank = json.loads(proc.stdout.splitlines()[-1])
    assert (rank["threads"], rank["intra"], rank["mask"]) == (cores, cores, cores)
