"""Typed configuration helpers: dataclasses <-> plain dicts (the Ray boundary) <-> YAML files."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar

import yaml

from thorax_ray import storage

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def to_dict(config: Any) -> dict:
    """A dataclass tree as plain dicts/lists (tuples become lists), ready for Ray, JSON or YAML."""
    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return plain(config)


def from_dict(cls: type[T], data: dict | None, *, where: str = "config") -> T:
    """Builds dataclass `cls` from a (nested) dict; unknown keys are an error naming the key."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None


def _coerce(hint, value, where: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(hint, value, where=where)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(inner[0], value, where) if len(inner) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        return _float_from_text(value, where)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def _float_from_text(value: str, where: str) -> float:
    """PyYAML reads `1e-3` (no dot in the mantissa) as text: a number written as text is accepted."""
    try:
        number = float(value.strip())
    except ValueError:
        raise ConfigError(f"{where}: expected float, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where}: expected a finite float, got {value!r}")
    return number


def load_yaml(path: str) -> dict:
    """A YAML file holding a mapping; a missing, unreadable or malformed file is a ConfigError naming
    the file (and the line of a syntax error)."""
    fs, local = storage.filesystem(path)
    if not fs.exists(local) or fs.isdir(local):
        raise ConfigError(f"{path}: config file not found" + (" (it is a folder)" if fs.exists(local) else ""))
    try:
        data = yaml.safe_load(storage.read_text(path)) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}{at}: not valid YAML ({problem})") from None
    except storage.NotTextError as error:
        raise ConfigError(str(error)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def merge(base: dict, override: dict) -> dict:
    """Deep merge of nested dicts (override wins)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def overrides_from_flags(args: Any, flags: dict[str, tuple[str, str]]) -> dict:
    """Nested config overrides `{section: {key: value}}` from parsed command-line `args`, for each
    `flag -> (section, key)` of `flags` whose value was given (not None)."""
    overrides: dict = {}
    for flag, (section, key) in flags.items():
        value = getattr(args, flag)
        if value is not None:
            overrides = merge(overrides, {section: {key: value}})
    return overrides
