"""The console script itself: help everywhere, version, clear errors."""
import pytest

from testlib import run_cli
from cosmotrain.cli import GROUPS


def test_version_and_top_level_help():
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("cosmotrain ")
    out = run_cli("--help")
    assert out.returncode == 0
    for group in GROUPS:
        assert group in out.stdout


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_group_has_help(group):
    out = run_cli(group, "--help")
    assert out.returncode == 0, out.stderr
    assert "usage: cosmotrain " + group in out.stdout


def test_group_without_verb_prints_help_and_fails():
    out = run_cli("train")
    assert out.returncode == 2 and "usage:" in out.stderr


def test_unknown_benchmark_is_refused():
    out = run_cli("bench", "nonsense")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_bench_overrides_are_checked_before_any_work():
    out = run_cli("bench", "pipeline", "--set", "train.steps=10")
    assert out.returncode != 0 and "gan-quality, galaxy-baselines, scaling-model benchmarks only" in out.stderr
    out = run_cli("bench", "scaling-model", "--set", "train.batch_size=8")  # before any cluster starts
    assert out.returncode == 2 and "allreduce.KEY=VALUE only" in out.stderr.strip().splitlines()[-1]
    out = run_cli("bench", "scaling-model", "--set", "allreduce.fusion_threshold_mb=-1")
    assert out.returncode == 2 and "fusion_threshold_mb must be >= 0" in out.stderr.strip().splitlines()[-1]
    out = run_cli("bench", "gan-quality", "--set", "train.spectrum_wieght=0")
    assert out.returncode != 0 and "spectrum_wieght" in out.stderr.strip().splitlines()[-1]
    out = run_cli("bench", "galaxy-baselines", "--set", "synthetic.generater=simple")
    assert out.returncode == 2 and "synthetic.generater" in out.stderr.strip().splitlines()[-1]
    out = run_cli("bench", "step", "--data", "somewhere")
    assert out.returncode == 2 and "galaxy-baselines benchmark only" in out.stderr
    out = run_cli("bench", "pipeline", "--latent-sets", "3")
    assert out.returncode == 2 and "gan-quality benchmark only" in out.stderr
    out = run_cli("bench", "gan-quality", "--set-size", "2")
    assert out.returncode == 2 and "--set-size >= 4" in out.stderr.strip().splitlines()[-1]
