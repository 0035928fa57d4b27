"""The runtime under real Open MPI ranks: slicing agrees across ranks, failures end the job."""
import json
import re
import subprocess
import sys
import time

import pytest

from testlib import BIN, mpi_env, run_mpi_python

pytestmark = pytest.mark.mpi

SLICES = """
import json, sys
import numpy as np
from cosmotrain import dist
from cosmotrain.data import epochs, reader
ctx = dist.init_mpi()
s = reader.ShardSet(sys.argv[1], "train")
mine = np.concatenate([s.read(a, b, ("ids",))["ids"] for a, b in epochs.epoch_runs(s.n, ctx.rank, ctx.size, 9, 1)])
everyone = dist.allgather_object(mine.tolist())
if ctx.rank == 0:
    print(json.dumps(everyone))
"""


def test_two_ranks_get_disjoint_equal_slices_covering_the_data(tiny_galaxies):
    out = run_mpi_python(SLICES, np_=2, args=(tiny_galaxies,))
    assert out.returncode == 0, out.stderr
    a, b = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(a) == len(b) == 51
    assert not set(a) & set(b) and len(set(a) | set(b)) == 102  # one of 103 dropped


FAIL = """
import sys, time
from cosmotrain import dist
from cosmotrain.errors import UserError
ctx = dist.init_{engine}()
if ctx.rank == 1:
    time.sleep(1)
    raise {error}("disk on fire on rank 1")
dist.barrier() if "{engine}" == "mpi" else dist.allreduce_mean(__import__("tensorflow").constant(1.0))
time.sleep(120)  # never reached: rank 0 waits for rank 1 in the collective above
"""


@pytest.mark.parametrize("engine", ["mpi", "horovod"])
@pytest.mark.parametrize("error", ["RuntimeError", "UserError"])
def test_a_failing_rank_ends_the_whole_job_quickly(engine, error):
    """A crash aborts at once; a user's mistake met by one rank only waits FAIL_WAIT for the others, then aborts."""
    start = time.monotonic()
    out = run_mpi_python(FAIL.format(engine=engine, error=error), np_=2, timeout=60)
    took = time.monotonic() - start
    assert out.returncode != 0
    assert "disk on fire on rank 1" in out.stderr
    assert took < 30, f"job took {took:.0f}s to die"


def test_a_failing_rank_ends_a_gloo_job_quickly(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(FAIL.format(engine="horovod", error="RuntimeError"))
    start = time.monotonic()
    out = subprocess.run([str(BIN / "horovodrun"), "-np", "2", "--gloo", "-H", "localhost:2", sys.executable,
                          str(script)], capture_output=True, text=True, timeout=90, env=mpi_env())
    assert out.returncode != 0
    assert "disk on fire on rank 1" in out.stdout + out.stderr
    assert time.monotonic() - start < 30


def test_a_command_that_needs_mpi_says_so_in_one_line_under_gloo(tmp_path):
    out = subprocess.run([str(BIN / "horovodrun"), "-np", "2", "--gloo", "-H", "localhost:2", str(BIN / "cosmotrain"),
                          "data", "galaxies", "--synthetic", "60", "--out", str(tmp_path / "gal")],
                         capture_output=True, text=True, timeout=120, env=mpi_env())
    text = out.stdout + out.stderr
    assert out.returncode != 0
    errors = [line for line in text.splitlines() if "error:" in line]
    assert len(errors) == 2 and all(line.endswith(
        "error: this command runs on MPI ranks, and horovodrun --gloo starts none; launch it with mpirun -np N, "
        "srun --mpi=pmix, or horovodrun without --gloo") for line in errors), text
    assert "Exit code: 2" in text  # horovodrun's own report of the first rank to exit
    assert "src/cosmotrain/" not in text and "cosmotrain/dist.py" not in text  # no traceback through our code
    assert not (tmp_path / "gal").exists()


USER_ERROR = """
from cosmotrain import dist
from cosmotrain.errors import UserError
ctx = dist.init_mpi()
raise UserError("shard x.h5 is missing; regenerate the dataset")
"""


def test_a_user_error_is_one_line_and_non_zero():
    out = run_mpi_python(USER_ERROR, np_=2, timeout=60)
    assert out.returncode != 0
    lines = [l for l in out.stderr.splitlines() if "cosmotrain [rank" in l]
    assert lines and all(l.endswith("shard x.h5 is missing; regenerate the dataset") for l in lines)
    assert "Traceback" not in out.stderr


THREADS = """
from cosmotrain import dist
import json, os
ctx = dist.init_horovod()
import tensorflow as tf
row = [ctx.rank, ctx.threads, tf.config.threading.get_intra_op_parallelism_threads(), os.environ["OMP_NUM_THREADS"]]
"""
PRINT_ROWS = """
rows = dist.allgather_object(row)  # printed by one rank: mpirun may merge lines of several
if ctx.rank == 0:
    print(json.dumps(rows))
"""


def rows_of_two_ranks(script: str) -> list:
    """Each rank's ``row`` at the end of ``script``, in rank order, from 2 real ranks."""
    out = run_mpi_python(script + PRINT_ROWS, np_=2, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_two_ranks_on_two_cores_do_not_share_threads():
    rows = rows_of_two_ranks(THREADS)
    import os
    cores = len(os.sched_getaffinity(0))
    assert sorted(r[0] for r in rows) == [0, 1]
    assert all(r[1] == r[2] == int(r[3]) == max(1, cores // 2) for r in rows)


LOGGING = """
from cosmotrain import dist, logs
ctx = dist.init_mpi()
log = logs.setup()
log.info("hello from rank %d", ctx.rank)
log.warning("the same warning on every rank")
logs.rank_warning(log, "rank %d's own warning", ctx.rank)
for _ in logs.progress(range(3), desc="loop-rank-%d" % ctx.rank, unit="step"):
    pass
"""
DATED = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} \[[01]/2\] (INFO|WARNING) ")


def test_rank_zero_logs_info_progress_and_shared_warnings_once_with_date_and_time():
    out = run_mpi_python(LOGGING, np_=2, timeout=60, env=mpi_env(COSMOTRAIN_PROGRESS_SECONDS="0"))
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert lines and all(DATED.match(line) for line in lines), out.stderr
    assert "hello from rank 0" in out.stderr and "hello from rank 1" not in out.stderr
    shared = [l for l in lines if "the same warning on every rank" in l]
    assert len(shared) == 1 and "[0/2] WARNING" in shared[0]
    for rank in (0, 1):
        assert sum(f"[{rank}/2] WARNING rank {rank}'s own warning" in l for l in lines) == 1
    # Not a terminal: the loop is reported in plain lines (no carriage return), by rank 0 only.
    assert "\r" not in out.stderr
    assert any("INFO loop-rank-0: 100% (3/3 steps), " in l for l in lines), out.stderr
    assert "loop-rank-1" not in out.stderr


ROOT_CHECK = """
from cosmotrain import dist
from cosmotrain.errors import UserError
ctx = dist.init_mpi()
def check():
    raise UserError("column Class7.1 missing from table.csv; use the Kaggle file")
dist.root_computes(check)
"""


def test_an_input_error_found_by_rank_zero_is_reported_on_every_rank():
    out = run_mpi_python(ROOT_CHECK, np_=2, timeout=60)
    assert out.returncode != 0
    for rank in (0, 1):
        assert f"cosmotrain [rank {rank}]: error: column Class7.1 missing" in out.stderr


COMPUTE_ONLY = """
from cosmotrain import dist
import json
ctx = dist.init_horovod()
import tensorflow as tf
w = tf.Variable(1.0)
x = tf.constant(float(ctx.rank + 1))

def gradient():
    with tf.GradientTape() as tape:
        loss = x * w
    tape = dist.distributed_tape(tape, "w", dist.AllreduceConfig())
    return [float(tape.gradient(loss, [w])[0]), float(dist.allreduce_mean(x, name="x"))]

with dist.compute_only():
    local = gradient()
row = [local, gradient()]
"""


def test_a_step_run_compute_only_keeps_its_gradients_on_its_rank_and_the_next_one_averages_again():
    """What ``bench scaling-model`` times as a step's compute inside a 2-rank launch."""
    rows = rows_of_two_ranks(COMPUTE_ONLY)
    assert rows == [[[1.0, 1.0], [1.5, 1.5]], [[2.0, 2.0], [1.5, 1.5]]]
