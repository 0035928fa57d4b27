"""The job scripts and jobs/env.sh without a cluster: lint, #SBATCH contract, checks.

Fast (a few seconds), so they run in `make test`; the same scripts on a real SLURM are in
test_jobs_harness.py and test_stages.py (`make slurm-test`).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "jobs").glob("*.sbatch"))
STAGES = {"prepare_galaxies", "simulate_cmb", "train_classifier", "train_gan", "sample_gan", "predict_classifier"}


def sbatch_lines(script: Path) -> list[str]:
    return re.findall(r"^#SBATCH (\S+)", script.read_text(), re.M)


def env_sh(snippet: str, **env: str) -> subprocess.CompletedProcess:
    """Run SNIPPET in bash after sourcing jobs/env.sh, as inside a job (SLURM_JOB_ID set)."""
    base = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "SLURM_JOB_ID": "1", "COSMOTRAIN_ROOT": str(REPO)}
    return subprocess.run(["bash", "-c", f'set -euo pipefail; source jobs/env.sh; {snippet}'],
                          cwd=REPO, env={**base, **env}, capture_output=True, text=True)


def test_one_script_per_stage():
    assert {p.stem for p in SCRIPTS} == STAGES


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck missing (apt-get install shellcheck)")
def test_scripts_pass_shellcheck():
    files = [str(p.relative_to(REPO)) for p in [*SCRIPTS, REPO / "jobs/env.sh", *(REPO / "scripts/slurm").glob("*.sh")]]
    res = subprocess.run(["shellcheck", "-x", *files], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_resources_are_in_sbatch_lines_and_env_is_shared(script):
    text = script.read_text()
    lines = sbatch_lines(script)
    assert any(l.startswith("--time=") for l in lines) and any(l.startswith("--job-name=") for l in lines)
    assert any(l.startswith(("--ntasks", "--ntasks-per-node")) for l in lines)
    assert 'source "$root/jobs/env.sh"' in text and "ct_setup" in text
    # All #SBATCH lines come before the first command, or sbatch ignores them.
    first_command = min(i for i, l in enumerate(text.splitlines()) if l and not l.startswith("#"))
    assert all(i < first_command for i, l in enumerate(text.splitlines()) if l.startswith("#SBATCH"))


@pytest.mark.parametrize("kind", ["classifier", "gan"])
def test_training_jobs_ask_for_a_warning_signal_and_requeue(kind):
    lines = sbatch_lines(REPO / f"jobs/train_{kind}.sbatch")
    assert any(re.fullmatch(r"--signal=B:USR1@\d+", l) for l in lines)
    assert "--requeue" in lines and "--open-mode=append" in lines
    assert any(l.startswith("--gpus-per-node=") for l in lines)


def test_outside_a_job_it_says_so():
    res = env_sh("ct_setup", SLURM_JOB_ID="")
    assert res.returncode == 1
    assert res.stderr.strip() == "cosmotrain-job: error: not inside a SLURM job: submit with sbatch bash"


def test_missing_image_is_one_clear_line():
    res = env_sh("ct_setup", COSMOTRAIN_SIF="/no/such.sif")
    assert res.returncode == 1
    assert res.stderr.splitlines() == ["cosmotrain-job: error: COSMOTRAIN_SIF=/no/such.sif: no such image file "
                                       "(build one: apptainer build cosmotrain.sif singularity/cosmotrain.def)"]


def test_image_without_a_runtime_is_one_clear_line(tmp_path):
    sif = tmp_path / "c.sif"
    sif.write_bytes(b"")
    res = env_sh("ct_setup", COSMOTRAIN_SIF=str(sif))
    assert res.returncode == 1 and "neither apptainer nor singularity is on PATH" in res.stderr


def test_missing_venv_names_the_fix(tmp_path):
    res = env_sh("ct_setup", COSMOTRAIN_VENV=str(tmp_path / "none"))
    assert res.returncode == 1 and "run 'make env'" in res.stderr and "COSMOTRAIN_SIF" in res.stderr


def test_unknown_launcher_is_refused():
    res = env_sh("ct_setup", COSMOTRAIN_LAUNCHER="aprun")
    assert res.returncode == 1 and "use srun or mpirun" in res.stderr


@pytest.mark.parametrize("tasks,gpus,warns", [("4", "4", False), ("8(x2)", "4", True), ("2", "", False),
                                              ("4(x2),3", "2", True)])
def test_more_ranks_than_gpus_per_node_warns(tasks, gpus, warns):
    res = env_sh("ct_check_gpus", SLURM_TASKS_PER_NODE=tasks, SLURM_GPUS_ON_NODE=gpus)
    assert res.returncode == 0
    assert ("ranks will share GPUs" in res.stderr) is warns, res.stderr


@pytest.mark.parametrize("devices,count", [("0,1,2", "3"), ("GPU-8f2e,GPU-77a1", "2"), ("NoDevFiles", "0"), ("", "0")])
def test_gpus_counted_from_cuda_visible_devices(devices, count):
    assert env_sh("ct_gpus_per_node", CUDA_VISIBLE_DEVICES=devices).stdout.strip() == count


def test_missing_input_names_the_previous_stage(tmp_path):
    res = env_sh(f'ct_need_input dataset {tmp_path}/gal "run jobs/prepare_galaxies.sbatch first"')
    assert res.returncode == 1
    assert res.stderr.strip() == (f"cosmotrain-job: error: dataset {tmp_path}/gal does not exist "
                                  "(run jobs/prepare_galaxies.sbatch first)")


def test_checkpoint_detection_ignores_temp_files(tmp_path):
    run = tmp_path / "run"
    check = f"ct_has_checkpoint {run} && echo yes || echo no"
    assert env_sh(check).stdout.strip() == "no"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-3.h5.tmp123").write_text("")
    assert env_sh(check).stdout.strip() == "no"
    (run / "checkpoints" / "ckpt-3.h5").write_text("")
    assert env_sh(check).stdout.strip() == "yes"


def test_outputs_default_to_scratch_then_the_checkout():
    res = env_sh('echo "$COSMOTRAIN_CLASSIFIER_RUN"', SCRATCH="/scratch/me")
    assert res.stdout.strip() == "/scratch/me/cosmotrain/runs/classifier"
    res = env_sh('echo "$COSMOTRAIN_SAMPLES"')
    assert res.stdout.strip() == f"{REPO}/work/samples/gan"


GPU_STAGES = {"train_classifier", "train_gan", "sample_gan", "predict_classifier"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_site_settings_are_commented_placeholders_sbatch_ignores(script):
    placeholders = re.findall(r"^##SBATCH (--[\w-]+)=", script.read_text(), re.M)
    expected = {"--account", "--partition", "--constraint", "--qos"}
    if script.stem in GPU_STAGES:
        expected |= {"--gpus-per-task", "--gpu-bind"}
        assert "##SBATCH --gpus-per-task=1" in script.read_text()
    assert set(placeholders) == expected
    active = {line.split("=")[0] for line in sbatch_lines(script)}
    assert not active & {"--account", "--partition", "--constraint", "--qos"}, "a site value is hard-coded"


def test_job_logs_get_progress_lines_and_dated_messages():
    res = env_sh('echo "$COSMOTRAIN_PROGRESS"; ct_log hello')
    assert res.stdout.strip() == "log"
    assert re.fullmatch(r"cosmotrain-job \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}: hello\n", res.stderr)
    assert env_sh('echo "$COSMOTRAIN_PROGRESS"', COSMOTRAIN_PROGRESS="off").stdout.strip() == "off"


def test_modules_are_loaded_first_when_asked():
    fake = 'module() { echo "fake module $*" >&2; }; '
    res = env_sh(fake + "ct_setup", COSMOTRAIN_MODULES="apptainer openmpi/4.1")
    assert res.returncode == 0, res.stderr
    assert "fake module load apptainer openmpi/4.1" in res.stderr
    assert "fake module" not in env_sh(fake + "ct_setup").stderr  # nothing asked, nothing loaded


def test_modules_without_a_module_command_is_one_clear_line():
    res = env_sh("ct_setup", COSMOTRAIN_MODULES="apptainer")
    assert res.returncode == 1
    assert res.stderr.splitlines()[-1] == ("cosmotrain-job: error: COSMOTRAIN_MODULES=apptainer but this shell has no "
                                           "'module' command; unset it, or load the modules in the job script")

