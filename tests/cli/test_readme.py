"""The README's walkthrough, run as written, so the manual cannot drift from the program.

The walkthrough is the fenced ```bash and ```python blocks of README.md that follow a
``<!-- walkthrough -->`` line. The bash blocks are joined into one script and run in a fresh
folder (``configs`` there is a link to the repository's configs/), with the walkthrough's
size variables set small through the environment; then the python blocks run in the same
folder, on the models the script trained. 2 MPI ranks, about 2½ minutes on 2 cores."""
import json
import os
import re
import subprocess
import sys

import h5py
import pytest

from testlib import BIN, REPO, mpi_env

README = REPO / "README.md"
MARKER = "<!-- walkthrough -->"

# The walkthrough's sizes, made small: every variable its first block defaults must be here.
TINY = {
    "N_GALAXIES": "3000",   # 300 test galaxies: 2 batches of 256 for `predict` on 2 ranks
    "CLF_EPOCHS": "1",
    "GAN_STEPS": "40",      # one monitor (the final one), one checkpoint
    "N_SAMPLES": "640",     # 10 batches of 64 for `sample`, 3 of 256 for the referee
}


def walkthrough_blocks(language: str) -> list[str]:
    """The bodies of the README's fenced ``language`` blocks that follow the marker line."""
    blocks, lines = [], README.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j < len(lines) and lines[j].strip() == f"```{language}":
            end = lines.index("```", j + 1)
            blocks.append("\n".join(lines[j + 1:end]))
    return blocks


def walkthrough_env() -> dict:
    venv_bin = REPO / ".venv" / "bin"
    path = os.pathsep.join(str(p) for p in (venv_bin, BIN) if p.is_dir())
    env = mpi_env(OMPI_MCA_hwloc_base_binding_policy="none", **TINY)  # like `mpirun --bind-to none`
    env["PATH"] = f"{path}{os.pathsep}{env['PATH']}"
    return env


def test_the_walkthrough_is_marked_and_sized_by_variables():
    bash, python = walkthrough_blocks("bash"), walkthrough_blocks("python")
    assert len(bash) >= 3 and len(python) >= 1, "README.md lost its <!-- walkthrough --> blocks"
    defaults = dict(re.findall(r'"\$\{(\w+):=([^}]*)\}"', bash[0]))
    assert set(defaults) == set(TINY), f"the walkthrough's size variables are {sorted(defaults)}; update TINY"
    script = "\n".join(bash)
    for name in TINY:
        assert f'"${name}"' in script, f"${name} is defaulted but not used"
    for command in ("data galaxies", "train classifier", "evaluate classifier", "predict classifier",
                    "data cmb", "spectra", "train gan", "sample gan", "validate samples"):
        assert f"cosmotrain {command}" in script


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    """The bash blocks run in a fresh folder: (folder, completed process)."""
    work = tmp_path_factory.mktemp("walkthrough")
    (work / "configs").symlink_to(REPO / "configs", target_is_directory=True)
    script = "set -euo pipefail\n" + "\n".join(walkthrough_blocks("bash")) + "\n"
    (work / "walkthrough.sh").write_text(script)
    out = subprocess.run(["bash", "walkthrough.sh"], cwd=work, env=walkthrough_env(), capture_output=True,
                         text=True, timeout=900)
    return work, out


@pytest.mark.mpi
def test_the_walkthrough_runs_and_writes_what_it_says(walked):
    work, out = walked
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    metrics = json.loads((work / "runs/clf/eval/metrics_tta.json").read_text())
    assert metrics["tta"] is True and metrics["n_all"] == int(TINY["N_GALAXIES"]) // 10
    assert 0 < metrics["n"] < metrics["n_all"]  # accuracy over the galaxies a class keeps
    assert (work / "data/galaxies/preview.png").is_file()
    assert (work / "predictions/test/predictions.csv").read_text().count("\n") == int(TINY["N_GALAXIES"]) // 10 + 1
    assert json.loads((work / "predictions/test/manifest.json").read_text())
    with h5py.File(work / "predictions/test/samples.h5", "r") as h5:
        assert h5["probabilities"].shape == (int(TINY["N_GALAXIES"]) // 10, 3)
    spectra = json.loads((work / "data/cmb_tiny/spectra.json").read_text())
    assert spectra["n_patches"] > 0 and (work / "data/cmb_tiny/spectra.png").is_file()
    assert json.loads((work / "runs/gan/metrics.json").read_text())["steps"] == int(TINY["GAN_STEPS"])
    assert list((work / "runs/gan/plots").glob("*.png"))
    assert json.loads((work / "samples/gan/manifest.json").read_text())
    with h5py.File(work / "samples/gan/samples.h5", "r") as h5:
        assert h5["patches"].shape[0] == int(TINY["N_SAMPLES"])
    validation = json.loads((work / "samples/gan/validation/validation.json").read_text())
    assert validation["samples"]["n"] == int(TINY["N_SAMPLES"]) and isinstance(validation["pass"], bool)
    assert validation["reference"]["split"] == "test" and len(validation["tests"]) == 8
    assert (work / "samples/gan/validation/validation.png").is_file()


@pytest.mark.mpi
def test_the_python_api_snippet_runs_on_the_walkthroughs_models(walked):
    work, out = walked
    if out.returncode != 0:
        pytest.fail("the walkthrough's bash blocks failed (see the first test)")
    for code in walkthrough_blocks("python"):
        result = subprocess.run([sys.executable, "-c", code], cwd=work, env=walkthrough_env(), capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, f"{code}\n---\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


# What the snippet's comment promises: generator.sample(n, seed=0) is `sample gan --n n --seed 0`, bit for bit.
SAME_PATCHES = """
import sys
import h5py
import numpy as np
from cosmotrain.inference import load_generator
n = int(sys.argv[1])
patches = load_generator("runs/gan", checkpoint="best").sample(n, seed=0)
with h5py.File("samples/gan/samples.h5", "r") as h5:
    assert np.array_equal(patches, h5["patches"][:n]), "generator.sample differs from the sample set"
"""


@pytest.mark.mpi
def test_generator_sample_gives_the_sample_sets_patches(walked):
    work, out = walked
    if out.returncode != 0:
        pytest.fail("the walkthrough's bash blocks failed (see the first test)")
    result = subprocess.run([sys.executable, "-c", SAME_PATCHES, TINY["N_SAMPLES"]], cwd=work, env=walkthrough_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_manual_stays_a_manual():
    """At most 400 lines with a table of contents: design history goes to docs/, results to bench/README.md."""
    lines = README.read_text().splitlines()
    assert len(lines) <= 400, f"README.md has {len(lines)} lines; move detail to docs/"
    assert "## Contents" in lines
