"""Signals a cluster sends to a training job, for real: SIGTERM and SIGUSR1 (pre-emption, the time
limit), SIGKILL of a rank or of the launcher, SIGSTOP (a hung node). Findings F10-F13."""
import os
import signal
import subprocess
import sys
import time

import pytest

from faultlib import CLASSIFIER, Job, alive, all_gone, at_step, cli, heartbeat, latest_checkpoint, one_error_line

STEPS_PER_EPOCH = {1: 24, 2: 12}  # 384 training galaxies in batches of 16 per rank
BEAT = ["--set", "runtime.stall_timeout=20"]  # heartbeats every second, so the test sees the steps


def start(galaxies, run, log, np_=1, epochs=100, extra=()):
    """``train classifier`` in the background: ``epochs`` long (longer than any test waits)."""
    return Job("train", "classifier", *CLASSIFIER, "--data", galaxies, "--out", run, "--set", f"train.epochs={epochs}",
               *BEAT, *extra, np_=np_, log=log)


def resume_to_the_end(galaxies, run, np_=1):
    """Continue ``run`` with --resume for one more epoch than its checkpoint holds; the completed process."""
    done = latest_checkpoint(run) // STEPS_PER_EPOCH[np_]
    out = cli("train", "classifier", "--data", galaxies, "--out", run, "--resume", "--set", f"train.epochs={done + 1}",
              np_=np_)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_sigterm_on_every_rank_checkpoints_at_a_step_boundary_and_exits_75(galaxies, tmp_path):
    """F10: SLURM's SIGTERM (time limit, pre-emption) reaches every process of the job."""
    run = tmp_path / "run"
    job = start(galaxies, run, tmp_path / "log", np_=2)
    job.wait_for(lambda: at_step(run, 3, ranks=2), "step 3 on both ranks")
    for pid in job.ranks():
        os.kill(pid, signal.SIGTERM)
    assert job.finish() == 75, job.output[-3000:]
    assert "SIGTERM: checkpointed" in job.output and "stopping for requeue (exit 75)" in job.output
    step = latest_checkpoint(run)
    assert step is not None and step >= 3
    out = resume_to_the_end(galaxies, run, np_=2)
    assert f"resumed from {run}/checkpoints/ckpt-{step}" in out.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_a_single_process_checkpoints_and_exits_75(galaxies, tmp_path, signum):
    """F10 (and SIGUSR1, SLURM's --signal warning) when the job is one process."""
    run = tmp_path / "run"
    job = start(galaxies, run, tmp_path / "log")
    job.wait_for(lambda: at_step(run, 2), "step 2")
    job.proc.send_signal(signum)
    assert job.finish() == 75, job.output[-3000:]
    assert f"{signal.Signals(signum).name}: checkpointed" in job.output
    assert latest_checkpoint(run) >= 2


def test_a_run_killed_before_its_first_checkpoint_can_be_rerun_and_resumed(galaxies, tmp_path):
    """F11, F12: a requeued job that never checkpointed must start again, with or without --resume."""
    for attempt, flags in enumerate(([], ["--resume"])):
        run = tmp_path / f"run{attempt}"
        job = start(galaxies, run, tmp_path / f"log{attempt}", epochs=1)  # its one checkpoint comes at the end
        job.wait_for(lambda: (run / "config.yaml").is_file(), "the run's config.yaml", every=0.02)
        job.kill()  # while the first step is being traced: long before the end of the epoch
        assert latest_checkpoint(run) is None and (run / "config.yaml").is_file()
        out = cli("train", "classifier", *CLASSIFIER, "--data", galaxies, "--out", run, "--set", "train.epochs=1",
                  *flags)
        assert out.returncode == 0, out.stderr[-3000:]
        assert ("no checkpoint yet; starting from scratch" in out.stderr if flags else
                "stopped before its first checkpoint; starting this run from scratch" in out.stderr)
        assert (run / "metrics.json").is_file()


def test_kill_9_of_a_rank_ends_the_job_and_resume_continues(galaxies, tmp_path):
    run = tmp_path / "run"
    job = start(galaxies, run, tmp_path / "log", np_=2)
    # Rank 1's pid is in its heartbeat, written first one beat period (10 s) after the start:
    # the first checkpoint of the (small) kept galaxy set can come sooner.
    job.wait_for(lambda: latest_checkpoint(run) and heartbeat(run, 1), "the first checkpoint and rank 1's heartbeat")
    step, ranks = latest_checkpoint(run), job.ranks()
    os.kill(heartbeat(run, 1)["pid"], signal.SIGKILL)
    assert job.finish() != 0  # within the hang guard: the other rank does not wait for ever
    assert all_gone(ranks), "a rank is still running"
    assert latest_checkpoint(run) >= step
    resume_to_the_end(galaxies, run, np_=2)


def test_kill_9_of_the_launcher_leaves_no_rank_running(galaxies, tmp_path):
    run = tmp_path / "run"
    job = start(galaxies, run, tmp_path / "log", np_=2)
    job.wait_for(lambda: at_step(run, 3, ranks=2), "step 3 on both ranks")
    ranks = job.ranks()
    os.kill(job.proc.pid, signal.SIGKILL)
    job.proc.wait()
    try:
        assert all_gone(ranks), "ranks still running after their launcher was killed"
    finally:
        job.kill()


def test_a_stopped_rank_ends_the_job_within_the_stall_timeout_naming_it(galaxies, tmp_path):
    """F13: SIGSTOP stands for a hung file system or a stuck GPU on one node."""
    run, timeout = tmp_path / "run", 10
    job = start(galaxies, run, tmp_path / "log", np_=2, extra=("--set", f"runtime.stall_timeout={timeout}"))
    job.wait_for(lambda: at_step(run, 3, ranks=2), "step 3 on both ranks")
    stopped = heartbeat(run, 1)["pid"]
    os.kill(stopped, signal.SIGSTOP)
    try:
        code = job.finish(timeout=timeout + 30)  # the promise: ended within stall_timeout + 30 s
        output = job.output  # read first: the stopped rank, continued below, may still add its own line
    finally:
        os.kill(stopped, signal.SIGCONT) if alive(stopped) else None
    assert code == 3, output[-3000:]
    message = one_error_line(output)
    assert message.startswith(f"stall: no rank has made progress for over {timeout} s (runtime.stall_timeout): "
                              f"rank 1 (host ") and f"pid {stopped}) stopped responding" in message
    assert "at step " in message and any(f"in '{phase}'" in message for phase in ("training", "validation",
                                                                                   "checkpoint"))


def test_a_job_suspended_for_longer_than_the_stall_timeout_goes_on_when_resumed(galaxies, tmp_path):
    """``scontrol suspend`` / ``resume`` stop and continue every rank: time stood still for all, not a stall."""
    run, timeout = tmp_path / "run", 10
    job = start(galaxies, run, tmp_path / "log", np_=2, epochs=20,
                extra=("--set", f"runtime.stall_timeout={timeout}"))
    job.wait_for(lambda: at_step(run, 3, ranks=2), "step 3 on both ranks")
    ranks = job.ranks()
    for pid in ranks:
        os.kill(pid, signal.SIGSTOP)
    time.sleep(2 * timeout)
    for pid in ranks:
        os.kill(pid, signal.SIGCONT)
    assert job.finish() == 0, job.output[-3000:]
    assert "stall" not in job.output and (run / "metrics.json").is_file()


STUCK = """
import sys, time
from pathlib import Path
from cosmotrain import dist
from cosmotrain.watchdog import Watchdog
ctx = dist.init_mpi()
with Watchdog(Path(sys.argv[1]), 6) as watch:
    for step in range(10**6):
        watch.progress(step, "training")
        if ctx.rank == 1 and step == 20:
            watch.progress(step, "reading a shard")
            time.sleep(3600)  # a read from a hung file system: the process lives, its main thread is stuck
        dist.barrier()
        time.sleep(0.01)
"""


def test_a_rank_stuck_in_a_call_ends_the_job_naming_it_and_its_phase(tmp_path):
    """F13, the other face of a hang: the process is alive but its main thread never returns."""
    from testlib import run_mpi_python

    out = run_mpi_python(STUCK, np_=2, args=(tmp_path / "heartbeat",), timeout=6 + 30 + 60)
    assert out.returncode == 3, out.stderr[-3000:]
    message = one_error_line(out.stderr)
    assert message.startswith("stall: no rank has made progress for over 6 s (runtime.stall_timeout): ")
    assert "rank 1 (host " in message and "made no progress for" in message and \
        "at step 20 in 'reading a shard'" in message


ALONE = """
import sys, time
from pathlib import Path
from cosmotrain import dist
from cosmotrain.watchdog import Watchdog
dist.init_mpi()
with Watchdog(Path(sys.argv[1]), 5) as watch:
    for step in range(500):
        watch.progress(step, "training")
        time.sleep(0.01)
print("finished")
"""


def test_a_rank_stopped_and_continued_does_not_count_the_time_it_stood_still(tmp_path):
    """A stopped rank is continued by its launcher on the way to ending it (it must not add a line of
    its own), or by ``scontrol resume`` (it must go on). Stopped right after its first heartbeat, before
    it has read anyone's: the case where it judged by the heartbeat times it wrote before the stop."""
    from testlib import mpi_env

    first = tmp_path / "heartbeat" / "rank-00000.json"
    proc = subprocess.Popen([sys.executable, "-c", ALONE, str(first.parent)], env=mpi_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120  # a hang guard
    while not first.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(8)  # longer than the 5 s stall timeout
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "finished" in out, err[-3000:]
