"""Job configuration: frozen dataclasses, YAML in, resolved YAML out.

A job's config is a tree of frozen dataclasses (one per section). ``load`` reads a YAML
file, applies ``--set section.key=value`` overrides and checks every key and type, so a
typo fails at once with a message naming the key, before any work starts::

    cfg = load(ClassifierConfig, "configs/classifier_tiny.yaml", ["train.epochs=3"])
    save(cfg, run_dir / "config.yaml")
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from pathlib import Path
from typing import Any, Iterable, Type, TypeVar

import yaml

from cosmotrain.errors import UserError
from cosmotrain.files import atomic_write_text

T = TypeVar("T")

# A number as people write it: 2e-4, 1E5, +1.5e3, .5 (YAML 1.1 reads the exponent forms as text).
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(UserError):
    """A user mistake in a config file or override; the message names the key and the fix."""


def load(cls: Type[T], path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> T:
    """Build ``cls`` from the YAML file at ``path`` (or its defaults), then ``overrides``."""
    raw: dict = {}
    if path is not None:
        raw = read_yaml(path)
    for item in overrides:
        apply_override(raw, item)
    return from_dict(cls, raw)


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping; a missing or malformed file is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found; pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(p.read_bytes().decode("utf-8-sig")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {p} is not valid YAML ({_yaml_problem(err)}); fix it") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections, not {type(data).__name__}")
    return data


def apply_override(raw: dict, item: str) -> None:
    """Apply one ``a.b=value`` override in place; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r} has no '='; write --set section.key=value")
    dotted, text = item.split("=", 1)
    keys = dotted.strip().split(".")
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {key} is a value, not a section")
    node[keys[-1]] = parse_value(dotted.strip(), text)


def parse_value(key: str, text: str) -> Any:
    """The value of ``--set key=text``, read as YAML; malformed YAML or a tag is a ConfigError."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}={text}: the value is not valid YAML ({_yaml_problem(err)}); write a plain "
                          f"value such as 3, 0.5, text or [16, 32], quoting the whole option in the shell") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """What is wrong, in a few words: a refused tag, or the parser's complaint (one line)."""
    if isinstance(err, yaml.constructor.ConstructorError):
        return "YAML tags such as !!python/... are not allowed"
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def from_dict(cls: Type[T], raw: dict, where: str = "") -> T:
    """Build dataclass ``cls`` from ``raw``, rejecting unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'} must be a section (mapping), got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown config key '{key}'; valid keys here: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in raw.items():
        key = f"{where}.{name}" if where else name
        values[name] = _coerce(hints[name], value, key)
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the type ``hint``; ints are accepted where floats are."""
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value if value is not None else {}, key)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(item, v, key) for v in value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}' must be one of {list(args)}, got {value!r}")
        return value
    return _check_scalar(hint, value, key)


def _check_scalar(hint: Any, value: Any, key: str) -> Any:
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"config key '{key}' must be {hint.__name__}, got {value!r}")
    if hint is float and not math.isfinite(value):
        raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
    return value


def to_dict(cfg: Any) -> dict:
    """The config as plain nested dicts and lists (tuples become lists)."""
    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(cfg))


def save(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def shipped(name: str) -> Path:
    """The config ``name`` (e.g. ``gan_tiny.yaml``) that comes with cosmotrain (the repository's ``configs/``)."""
    path = Path(__file__).with_name("configs") / name
    if not path.is_file():
        raise ConfigError(f"cosmotrain ships no config {name}; the shipped ones are in {path.parent}")
    return path
