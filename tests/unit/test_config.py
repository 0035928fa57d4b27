"""Config files and --set overrides: typos and wrong types fail loudly, naming the key."""
import dataclasses

import pytest
import yaml

from cosmotrain import config
from cosmotrain.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Train:
    epochs: int = 3
    lr: float = 1e-3
    schedule: str = "linear"


@dataclasses.dataclass(frozen=True)
class Job:
    train: Train = Train()
    seed: int = 0
    sizes: tuple[int, ...] = (32, 64)


def test_yaml_and_overrides_resolve_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 5\nseed: 7\n")
    cfg = config.load(Job, path, ["train.lr=0.01", "sizes=[8, 16]"])
    assert cfg == Job(Train(5, 0.01, "linear"), 7, (8, 16))
    config.save(cfg, tmp_path / "out" / "config.yaml")
    again = config.load(Job, tmp_path / "out" / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["sizes"] == [8, 16]


def test_int_accepted_for_float():
    assert config.load(Job, None, ["train.lr=1"]).train.lr == 1.0


@pytest.mark.parametrize("override, key", [
    ("train.epoch=3", "train.epoch"),       # typo in a key
    ("trian.epochs=3", "trian"),            # typo in a section
])
def test_unknown_key_is_named(override, key):
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'"):
        config.load(Job, None, [override])


@pytest.mark.parametrize("override, key", [
    ("train.epochs=three", "train.epochs"),
    ("train.epochs=2.5", "train.epochs"),
    ("seed=true", "seed"),
    ("sizes=[1, x]", "sizes"),
])
def test_wrong_type_is_named(override, key):
    with pytest.raises(ConfigError, match=f"config key '{key}' must be"):
        config.load(Job, None, [override])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(Job, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(Job, bad)
    with pytest.raises(ConfigError, match="has no '='"):
        config.load(Job, None, ["train.epochs"])


def test_written_files_are_readable_by_collaborators(tmp_path):
    config.atomic_write_text(tmp_path / "manifest.json", "{}")
    assert (tmp_path / "manifest.json").stat().st_mode & 0o044 == 0o044


@pytest.mark.parametrize("text, value", [("2e-4", 2e-4), ("1E5", 1e5), ("+1.5e3", 1500.0), ("-3e-2", -0.03),
                                         (".5", 0.5), ("3", 3.0)])
def test_floats_in_any_notation(text, value):
    assert config.load(Job, None, [f"train.lr={text}"]).train.lr == value


@pytest.mark.parametrize("override, words", [
    ("sizes=[16, 32", "the value is not valid YAML (expected ',' or ']'"),
    ("seed=!!python/object/apply:os.system ['true']", "YAML tags such as !!python/... are not allowed"),
    ("train.lr=.nan", "must be a finite number"),
    ("train.lr=1e5x", "must be float"),
])
def test_a_malformed_set_value_is_one_config_error(override, words):
    with pytest.raises(ConfigError, match=None) as caught:
        config.load(Job, None, [override])
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_config_file_that_is_not_utf8_or_has_a_tag(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("train:\n  schedule: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        config.load(Job, latin)
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("seed: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="YAML tags such as"):
        config.load(Job, tagged)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbfseed: 4\n")
    assert config.load(Job, bom).seed == 4
