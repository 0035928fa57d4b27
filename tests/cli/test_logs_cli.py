"""What a command prints while it works: dated lines, bars on a terminal only, plain progress lines in files."""
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios

import pytest

from testlib import BIN, REPO, mpi_env, run_cli

DATED = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} (\[\d/\d\] )?(INFO|WARNING) ")


def on_a_terminal(cmd: list, env: dict, timeout: float = 120) -> tuple[int, str]:
    """Run ``cmd`` with stdin, stdout and stderr on a pseudo-terminal; (exit code, what it printed)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows, 100 columns
    proc = subprocess.Popen(cmd, stdin=follower, stdout=follower, stderr=follower, cwd=REPO, env=env)
    os.close(follower)
    chunks = []
    while select.select([leader], [], [], timeout)[0]:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")


def test_a_log_file_gets_dated_lines_and_progress_records_without_carriage_returns(tmp_path):
    out = run_cli("data", "galaxies", "--synthetic", "300", "--out", tmp_path / "gal",
                  env=mpi_env(COSMOTRAIN_PROGRESS_SECONDS="0"))
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr
    lines = out.stderr.splitlines()
    assert lines and all(DATED.match(line) for line in lines), out.stderr
    assert any("INFO rendering galaxies: 100% (300/300 galaxies), " in line for line in lines), out.stderr


def test_a_terminal_gets_a_progress_bar_and_dated_lines(tmp_path):
    code, text = on_a_terminal([str(BIN / "cosmotrain"), "data", "galaxies", "--synthetic", "300", "--out",
                                str(tmp_path / "gal")], mpi_env())
    assert code == 0, text
    assert "rendering galaxies: 100%|" in text  # tqdm's bar
    assert any(DATED.match(line) for line in text.replace("\r", "\n").splitlines() if "INFO wrote" in line)


@pytest.mark.mpi
def test_mpirun_on_a_terminal_gets_a_bar_though_its_ranks_write_to_a_pipe(tmp_path):
    code, text = on_a_terminal(["mpirun", "-np", "2", "--bind-to", "none", str(BIN / "cosmotrain"), "data",
                                "galaxies", "--synthetic", "300", "--out", str(tmp_path / "gal")], mpi_env())
    assert code == 0, text
    assert "rendering galaxies: 100%|" in text


def test_a_bad_progress_setting_is_one_line_before_any_work(tmp_path):
    out = run_cli("data", "galaxies", "--synthetic", "300", "--out", tmp_path / "gal",
                  env=mpi_env(COSMOTRAIN_PROGRESS="bars"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "cosmotrain: error: COSMOTRAIN_PROGRESS='bars' is not one of auto, bar, log, off; unset it or pick one "
        "(log: one line a minute, for batch jobs)"]
    assert not (tmp_path / "gal").exists()


def test_progress_can_be_switched_off(tmp_path):
    out = run_cli("data", "galaxies", "--synthetic", "300", "--out", tmp_path / "gal",
                  env=mpi_env(COSMOTRAIN_PROGRESS="off", COSMOTRAIN_PROGRESS_SECONDS="0"))
    assert out.returncode == 0, out.stderr
    assert "rendering galaxies" not in out.stderr and "INFO wrote 300 galaxies" in out.stderr
