"""Every example a user may copy parses, and every `--set` key it shows exists for that command.

The examples are those of each command's --help, of the job scripts' and the configs'
comments, and the command lines of the README and docs/. Each cosmotrain command line goes
through the real argument parser, and its --config and --set through the real config loader
of that command; each `--set KEY=VALUE` shown anywhere else goes through the loader of the
command it is shown for.
"""
import argparse
import importlib
import re
import shlex

import pytest

from cosmotrain import cli, config
from testlib import REPO

# Each command with --set: the config class it reads and the shipped config its examples start from.
CONFIGS = {
    ("train", "classifier"): ("cosmotrain.train.classifier:ClassifierConfig", "classifier.yaml"),
    ("train", "gan"): ("cosmotrain.train.gan_config:GanConfig", "gan.yaml"),
    ("data", "cmb"): ("cosmotrain.data.cmb:CmbConfig", "cmb.yaml"),
    ("data", "galaxies"): ("cosmotrain.data.galaxy_dataset:GalaxiesConfig", "galaxies.yaml"),
    ("bench", None): ("cosmotrain.train.gan_config:GanConfig", "gan_tiny.yaml"),
}
JOBS = {"train_classifier": ("train", "classifier"), "train_gan": ("train", "gan"), "simulate_cmb": ("data", "cmb"),
        "prepare_galaxies": ("data", "galaxies"), "sample_gan": ("sample", "gan"),
        "predict_classifier": ("predict", "classifier")}
CONFIG_FILES = {"classifier": ("train", "classifier"), "gan": ("train", "gan"), "cmb": ("data", "cmb"),
                "galaxies": ("data", "galaxies")}
SET = re.compile(r"--set[ =]([\w.]+=[^\s`),;\]]+)")
PLACEHOLDER = re.compile(r"[$<>…|\[]|\.\.\.|KEY=VALUE")  # shell variables, elisions, alternatives: not literal examples
SYNOPSIS_WORD = re.compile(r"^[A-Z][A-Z_0-9]*(\.[a-z]+)?$")  # RUN, DIR, N, FILE.json: a synopsis, not an example
LAUNCHERS = ("cosmotrain ", "mpirun ", "srun ", "horovodrun ", "apptainer ", "singularity ")


def commands() -> dict:
    """{(group, verb): its argparse parser} for every command of the console script."""
    found = {}
    groups = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for group, group_parser in groups.choices.items():
        verbs = [a for a in group_parser._actions if isinstance(a, argparse._SubParsersAction)]
        if verbs:
            found.update({(group, verb): parser for verb, parser in verbs[0].choices.items()})
        else:
            found[(group, None)] = group_parser
    return found


def load(command: tuple, config_path, overrides: list[str]):
    """The command's config from ``config_path`` (default: its shipped config) and ``overrides``."""
    module, name = CONFIGS[command][0].split(":")
    cls = getattr(importlib.import_module(module), name)
    return config.load(cls, config_path or config.shipped(CONFIGS[command][1]), overrides)


def check_overrides(command: tuple, overrides: list[str], where: str) -> None:
    overrides = [o for o in overrides if not PLACEHOLDER.search(o)]
    if not overrides:
        return
    assert command in CONFIGS, f"{where} shows --set for '{' '.join(filter(None, command))}', which takes none"
    try:
        load(command, None, overrides)
    except config.ConfigError as err:
        pytest.fail(f"{where}: {' '.join('--set ' + o for o in overrides)}: {err}")


def command_lines(text: str) -> list[list[str]]:
    """The example command lines of ``text`` (lines that start with cosmotrain or a launcher; continuations
    joined), as the arguments after 'cosmotrain'."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        match = re.search(r"(?<![\w./-])cosmotrain (\w[\w-]*)(.*)", line)
        if not line.startswith(LAUNCHERS) or not match or match.group(1) not in cli.GROUPS:
            continue
        words = shlex.split(match.group(0), comments=True)
        if PLACEHOLDER.search(" ".join(words)) or any(SYNOPSIS_WORD.match(w) for w in words):
            continue
        found.append(words[1:])
    return found


def code_blocks(markdown: str) -> str:
    """The fenced code blocks of a markdown page, joined."""
    return "\n".join(re.findall(r"^```\w*\n(.*?)^```", markdown, re.M | re.S))


def check_command_line(words: list[str], where: str) -> None:
    parser = cli.build_parser()
    try:
        args = parser.parse_args(words)
    except SystemExit:
        pytest.fail(f"{where}: 'cosmotrain {' '.join(words)}' is not a valid command line")
    command = (args.group, getattr(args, "verb", None))
    if getattr(args, "overrides", None) and command in CONFIGS:
        try:
            load(command, getattr(args, "config", None), args.overrides)
        except config.ConfigError as err:
            pytest.fail(f"{where}: 'cosmotrain {' '.join(words)}': {err}")


@pytest.fixture(autouse=True)
def in_the_checkout(monkeypatch):
    monkeypatch.chdir(REPO)  # the examples name configs/... relative to the checkout


def test_every_command_with_set_is_known_here():
    with_set = {c for c, p in commands().items() if any("--set" in a.option_strings for a in p._actions)}
    assert with_set == set(CONFIGS)


@pytest.mark.parametrize("command", sorted(commands(), key=str), ids=lambda c: " ".join(filter(None, c)))
def test_help_examples_parse_and_their_keys_exist(command):
    text = commands()[command].format_help()
    where = f"cosmotrain {' '.join(filter(None, command))} --help"
    for words in command_lines(text):
        check_command_line(words, where)
    check_overrides(command, SET.findall(text), where)


@pytest.mark.parametrize("script", sorted((REPO / "jobs").glob("*.sbatch")), ids=lambda p: p.stem)
def test_job_script_comments_show_keys_their_command_accepts(script):
    comments = "\n".join(line for line in script.read_text().splitlines()
                         if line.startswith("#") and not line.startswith(("#SBATCH", "##SBATCH", "#!")))
    check_overrides(JOBS[script.stem], SET.findall(comments), str(script.relative_to(REPO)))
    for words in command_lines(comments):
        check_command_line(words, str(script.relative_to(REPO)))


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_config_comments_show_keys_of_their_own_command(path):
    command = CONFIG_FILES[path.stem.split("_")[0]]  # gan_tiny, gan_referee: train gan
    check_overrides(command, SET.findall(path.read_text()), str(path.relative_to(REPO)))


@pytest.mark.parametrize("page", ["README.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))])
def test_documented_command_lines_parse_and_their_keys_exist(page):
    text = (REPO / page).read_text()
    for words in command_lines(code_blocks(text)):
        check_command_line(words, page)
    for script, overrides in re.findall(r"jobs/(\w+)\.sbatch((?: --set \S+)+)", text):
        check_overrides(JOBS[script], SET.findall(overrides), page)


def test_a_config_is_found_by_name_where_no_such_file_exists(tmp_path, monkeypatch):
    """Inside a container the working directory holds no configs/: names resolve to the shipped ones."""
    monkeypatch.chdir(tmp_path)
    parse = cli.build_parser().parse_args
    shipped = str(config.shipped("gan_tiny.yaml"))
    for given in ("gan_tiny", "gan_tiny.yaml", "configs/gan_tiny.yaml"):
        assert parse(["train", "gan", "--config", given, "--out", "r"]).config == shipped
    (tmp_path / "gan_tiny.yaml").write_text("train: {steps: 7}\n")  # a file of that name wins
    assert parse(["train", "gan", "--config", "gan_tiny.yaml", "--out", "r"]).config == "gan_tiny.yaml"
    assert parse(["train", "gan", "--config", "no_such", "--out", "r"]).config == "no_such"
