"""Typed configuration helpers: dataclasses <-> plain dicts (the Ray boundary) <-> YAML files."""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, NamedTuple, TypeVar

import yaml
from typing_extensions import TypedDict

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
    """Builds dataclass `cls` from a (nested) dict, validated by pydantic against its type hints. Only the
    keys given are passed (the dataclass supplies the defaults, its `__post_init__` the value checks); every
    problem is a ConfigError naming the dotted key: `config.optim.lr: expected float, got 'fast'`,
    `config.optim: unknown key(s) ['lrr']; known: [...]`, `config.run: workers must be >= 1, ...`."""
    import pydantic  # deferred: pydantic (absent on the GPU machine, where bench/gpu.sh builds configs by hand)

    try:
        return _adapter(cls).validate_python(dict(data or {}))
    except pydantic.ValidationError as error:
        raise ConfigError(_message(cls, error.errors(), where)) from None


@functools.cache
def _adapter(cls: type):
    import pydantic  # deferred: pydantic (absent on the GPU machine)

    return pydantic.TypeAdapter(_schema(cls))


def _schema(cls: type) -> Any:
    """Dataclass `cls` as a pydantic type: a TypedDict of its fields (any subset given, no other key),
    strict (no bool as int, no text as int), turned into `cls` by calling it."""
    import pydantic  # deferred: pydantic (absent on the GPU machine)

    hints = typing.get_type_hints(cls)
    fields = TypedDict(f"{cls.__name__}Fields", {f.name: _field_type(hints[f.name]) for f in dataclasses.fields(cls)},
                       total=False)
    fields = pydantic.with_config(pydantic.ConfigDict(extra="forbid", strict=True))(fields)
    return Annotated[fields, pydantic.AfterValidator(functools.partial(_construct, cls))]


def _field_type(hint) -> Any:
    """A field's pydantic type: nested dataclasses and Optional follow the hint, a tuple is given as a list
    (its items checked by the dataclass), a float may be an int or a number written as text; the rest
    (Literal, unions of several types, dicts) is passed through for the dataclass to check."""
    if dataclasses.is_dataclass(hint):
        return _schema(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return typing.Optional[_field_type(inner[0])] if len(inner) == 1 else Any
    if origin is tuple:
        return _pydantic_types()[0]
    return _pydantic_types()[1].get(hint, Any)


def _list_to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _float_from_text(value: Any) -> Any:
    """PyYAML reads `1e-3` (no dot in the mantissa) as text: a number written as text is accepted."""
    if not isinstance(value, str):
        return value
    try:
        number = float(value.strip())
    except ValueError:
        raise _known_error("float_parsing") from None
    if not math.isfinite(number):
        raise _known_error("finite_number")
    return number


def _known_error(kind: str) -> Exception:
    from pydantic_core import PydanticKnownError  # deferred: pydantic (absent on the GPU machine)

    return PydanticKnownError(kind)


@functools.cache
def _pydantic_types() -> tuple[Any, dict]:
    """(the pydantic type of a tuple field, given as a list; the pydantic type of each scalar, a float
    possibly written as text)."""
    import pydantic  # deferred: pydantic (absent on the GPU machine)

    return (Annotated[tuple[Any, ...], pydantic.BeforeValidator(_list_to_tuple)],
            {int: int, str: str, bool: bool, float: Annotated[float, pydantic.BeforeValidator(_float_from_text)]})


# What a value of the wrong type should have been, by pydantic's error type.
_EXPECTED = {"int_type": "int", "string_type": "str", "bool_type": "bool", "float_type": "float",
             "float_parsing": "float", "finite_number": "a finite float", "dict_type": "a mapping",
             "tuple_type": "a list"}


def _construct(cls: type, fields: dict) -> Any:
    from pydantic_core import PydanticCustomError  # deferred: pydantic (absent on the GPU machine)

    try:
        return cls(**fields)
    except (TypeError, ValueError) as error:  # __post_init__'s checks: the message names the section
        raise PydanticCustomError("config", "{error}", {"error": str(error)}) from None


def _message(cls: type, errors: list[dict], where: str) -> str:
    """The first of pydantic's `errors` as one line naming the dotted key; unknown keys (reported first,
    all of one mapping together) with the known ones."""
    extra = [e for e in errors if e["type"] in ("extra_forbidden", "invalid_key")]  # invalid: not text
    if extra:
        at = extra[0]["loc"][:-1]
        unknown = sorted((e["loc"][-1] for e in extra if e["loc"][:-1] == at), key=str)
        return f"{_dotted(where, at)}: unknown key(s) {unknown}; known: {sorted(_known_keys(cls, at))}"
    error = errors[0]
    where = _dotted(where, error["loc"])
    if error["type"] in _EXPECTED:
        return f"{where}: expected {_EXPECTED[error['type']]}, got {error['input']!r}"
    return f"{where}: {error.get('ctx', {}).get('error', error['msg'])}"


def _dotted(where: str, loc: tuple) -> str:
    return ".".join([where, *map(str, loc)])


def _known_keys(cls: type, loc: tuple) -> list[str]:
    """The field names of the dataclass at `loc` (a path of field names) under `cls`."""
    for name in loc:
        hint = typing.get_type_hints(cls)[name]
        cls = next((a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a)), hint)
    return [f.name for f in dataclasses.fields(cls)]


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


class Flag(NamedTuple):
    """Where a command-line flag goes in a config: the field's dotted path (`run.workers`, `image.size`)
    and, for a flag whose given value is not yet the field's value (`--box-grid 0` meaning None), the
    function that makes it so. A flag table maps argparse dests to a Flag, or to the path alone."""
    field: str
    convert: Callable[[Any], Any] | None = None


FlagTable = dict[str, "str | Flag"]


def flag_target(entry: str | Flag) -> Flag:
    """A flag table's entry as a Flag (a plain path: the value copied as parsed)."""
    return entry if isinstance(entry, Flag) else Flag(entry)


def overrides_from_flags(args: Any, flags: FlagTable) -> dict:
    """Nested config overrides `{section: {key: value}}` from parsed command-line `args`: for each flag of
    `flags` whose value was given (not None, the argparse default of every config flag), its value,
    converted by the entry's `convert`, at the entry's dotted field path."""
    overrides: dict = {}
    for dest, entry in flags.items():
        value = getattr(args, dest)
        if value is None:
            continue
        target = flag_target(entry)
        *sections, key = target.field.split(".")
        nested = {key: target.convert(value) if target.convert else value}
        for section in reversed(sections):
            nested = {section: nested}
        overrides = merge(overrides, nested)
    return overrides


def config_from_flags(cls: type[T], args: Any, flags: FlagTable, fixed: dict | None = None) -> T:
    """Config dataclass `cls` of a job from its parsed command-line `args`: the `fixed` values (nested
    dicts, as the overrides) overlaid with `overrides_from_flags(args, flags)`; a field no flag gave keeps
    the dataclass's default. Built by calling the dataclasses themselves (a nested one from its dict), so
    their checks run, and fail, as when a job called them by hand."""
    return _build(cls, merge(fixed or {}, overrides_from_flags(args, flags)))


def _build(cls: type[T], values: dict) -> T:
    """`cls(**values)`, nested dataclasses built first from their dicts, in the order of `cls`'s fields."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {unknown}; known: {names}")
    return cls(**{name: _build(hints[name], values[name])
                  if isinstance(values[name], dict) and dataclasses.is_dataclass(hints[name]) else values[name]
                  for name in names if name in values})
