"""Search spaces: the YAML grammar of `tune_spaces/*.yaml` -> a validated, typed `SearchSpace`.

A space file has four top-level keys (all optional but `params`)::

    description: free text
    base:    {section: {field: value}}     # fixed overrides of TrainConfig (same layout as a --config YAML)
    params:  {section.field: {KIND: ARGS}}  # what Tune searches; KIND: choice | grid | uniform | loguniform | randint
             {section: {choice: [{field: value, ...}, ...]}}  # whole-section alternatives (e.g. loss settings)
    tune:    {metric, mode, num_samples, grace_period, reduction_factor, max_t, seed, scheduler}

Every key and value is checked against TrainConfig's dataclasses before anything runs: an unknown
section or field, a bad range, an unknown architecture or loss kind, a value of the wrong type each
stop with a `ConfigError` that names the offending path (`params.optim.lrr`, ...). The grammar is
documented in `tune_spaces/README.md`; here it is pydantic models (`_SpaceFile`, `_Spec`, `TuneSettings`,
unknown keys forbidden) whose errors `_space_error` words as before: the dotted key and the known values.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

import pydantic
from pydantic import ConfigDict, Field, StrictFloat, StrictInt
from pydantic_core import PydanticCustomError

from thorax_ray.config_io import ConfigError, load_yaml, merge
from thorax_ray.models import list_models
from thorax_ray.train.config import TrainConfig

KINDS: tuple[str, ...] = ("choice", "grid", "uniform", "loguniform", "randint")
RANGE_KINDS = ("uniform", "loguniform", "randint")
TOP_LEVEL = ("description", "base", "params", "tune")
# Set per trial by jobs/tune.py (or by the command line), never searched.
NOT_SEARCHABLE = {"run.name": "set per trial", "run.storage": "set by --storage",
                  "data.data": "set by --data or base", "data.s3_endpoint": "set by --s3-endpoint",
                  "optim.epochs": "it is ASHA's budget; set it in base (or --epochs)"}
# Fields that apply only when another field has a given value; elsewhere they are dropped (inactive),
# so that e.g. `loss.kind: choice [bce, class_balanced_bce]` can be searched together with `loss.pos_weight_scale`.
ACTIVE_WHEN: dict[tuple[str, str], tuple[str, str, str]] = {
    ("loss", "pos_weight_scale"): ("loss", "kind", "class_balanced_bce"),
    ("loss", "per_class_pos_weight"): ("loss", "kind", "class_balanced_bce"),
    ("loss", "focal_gamma"): ("loss", "kind", "focal"),
    ("loss", "focal_alpha"): ("loss", "kind", "focal"),
    ("model", "backbone"): ("model", "name", "fusion"),
}
METRICS_MODES = {"val_mean_auroc": "max", "train_loss": "min"}


@dataclass(frozen=True)
class Param:
    """One searched key: `path` is `section.field` or a whole `section`; `kind` one of KINDS."""

    path: str
    kind: str
    values: tuple = ()  # choice / grid
    low: float | int | None = None  # ranges
    high: float | int | None = None

    def domain(self):
        """The Ray Tune search domain."""
        from ray import tune  # deferred: Ray (absent on the GPU machine)

        if self.kind == "choice":
            return tune.choice(list(self.values))
        if self.kind == "grid":
            return tune.grid_search(list(self.values))
        if self.kind == "uniform":
            return tune.uniform(self.low, self.high)
        if self.kind == "loguniform":
            return tune.loguniform(self.low, self.high)
        return tune.randint(self.low, self.high)


class TuneSettings(pydantic.BaseModel):
    """The `tune:` section. A field's description is what its value must be (a ConfigError says so)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    metric: str = Field("val_mean_auroc", description=f"one of {sorted(METRICS_MODES)} or val_auroc_<finding>")
    mode: Literal["max", "min"] = Field("max", description="max or min")
    num_samples: int = Field(4, ge=1, description="an integer >= 1")  # trials (jobs/tune.py --trials overrides)
    scheduler: Literal["asha", "none"] = Field("asha", description="asha or none")
    # epochs every trial runs before ASHA may stop it
    grace_period: int = Field(1, ge=1, description="an integer >= 1")
    reduction_factor: int | float = Field(2.0, gt=1, description="a number > 1")  # an int stays one
    max_t: int | None = Field(None, description="an integer >= grace_period")  # default: base optim.epochs
    # random search seed (reproducible samples); None: not seeded
    seed: int | None = Field(0, description="an integer or null")

    @pydantic.field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        if metric not in METRICS_MODES and not metric.startswith("val_auroc_"):
            raise _error(f"tune.metric: unknown metric {metric!r}; known: "
                         f"{sorted(METRICS_MODES)} or val_auroc_<finding>")
        return metric

    @pydantic.field_validator("max_t")
    @classmethod
    def _not_below_grace_period(cls, max_t: int | None, info: pydantic.ValidationInfo) -> int | None:
        if max_t is not None and max_t < info.data.get("grace_period", 1):
            raise ValueError("max_t < grace_period")
        return max_t


@dataclass(frozen=True)
class SearchSpace:
    name: str
    base: dict  # nested TrainConfig overrides
    params: tuple[Param, ...]
    tune: TuneSettings = field(default_factory=TuneSettings)
    description: str = ""

    @property
    def grid_size(self) -> int:
        size = 1
        for param in self.params:
            if param.kind == "grid":
                size *= len(param.values)
        return size

    def param_space(self) -> dict:
        """Tune's param_space: flat, keyed by the dotted path."""
        return {p.path: p.domain() for p in self.params}

    def base_config(self) -> TrainConfig:
        return TrainConfig.from_dict(resolve(self.base, {}))

    def with_base(self, overrides: dict) -> "SearchSpace":
        """A copy whose base has `overrides` merged in (command-line flags), validated again."""
        space = dataclasses.replace(self, base=merge(self.base, overrides))
        _check_space(space, where=f"{space.name} (with command-line overrides)")
        return space


def resolve(base: dict, sample: dict) -> dict:
    """The nested TrainConfig dict of one trial: `base` with the trial's `sample` (flat, dotted keys as
    in `SearchSpace.param_space`, or whole sections) merged in and inactive fields dropped."""
    config = merge({}, base)
    for path, value in sample.items():
        if "." in path:
            section, key = path.split(".", 1)
            config = merge(config, {section: {key: value}})
        else:  # a whole-section alternative replaces the section's searched fields
            config = merge(config, {path: dict(value)})
    for (section, key), (cond_section, cond_key, wanted) in ACTIVE_WHEN.items():
        values = config.get(section)
        if isinstance(values, dict) and key in values:
            current = (config.get(cond_section) or {}).get(cond_key, _default(cond_section, cond_key))
            if current != wanted:
                config[section] = {k: v for k, v in values.items() if k != key}
    return config


def _default(section: str, key: str):
    section_cls = _section_types()[section]
    default = next(f for f in dataclasses.fields(section_cls) if f.name == key)
    return default.default


def _section_types() -> dict[str, type]:
    return {f.name: f.default_factory().__class__ for f in dataclasses.fields(TrainConfig)}


def load_space(path: str) -> SearchSpace:
    """Reads and validates a space file; the space is named after the file (`smoke.yaml` -> smoke)."""
    data = load_yaml(path)
    name = os.path.splitext(os.path.basename(path))[0]
    return parse_space(data, name=name, where=path)


def parse_space(data: Any, *, name: str = "space", where: str = "space") -> SearchSpace:
    try:
        parsed = _SpaceFile.model_validate(data)
    except pydantic.ValidationError as error:
        raise ConfigError(f"{where}: {_space_error(error.errors(), data)}") from None
    params = tuple(spec.param(str(path)) for path, spec in parsed.params.items())
    space = SearchSpace(name=name, base=parsed.base or {}, params=params, tune=parsed.tune or TuneSettings(),
                        description=str(parsed.description or ""))
    _check_space(space, where)
    return space


def _error(message: str) -> PydanticCustomError:
    """A validation error whose message is final (`_space_error` passes it on as it is)."""
    return PydanticCustomError("space", "{message}", {"message": message})


def _number(value: Any) -> Any:
    """A number written as text (`'1e-3'`) as a float; anything else unchanged (checked by the caller)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _pair(value: Any) -> Any:
    """A range's `[low, high]`, PyYAML's text numbers (it reads 1e-3, no dot, as text) read as floats."""
    if not isinstance(value, list) or len(value) != 2:
        raise PydanticCustomError("pair", "needs [low, high]")
    return [_number(bound) for bound in value]


def _ordered(bounds: list, info: pydantic.ValidationInfo) -> list:
    kind, (low, high) = info.field_name, bounds
    if kind == "randint" and not all(isinstance(bound, int) for bound in bounds):
        raise PydanticCustomError("integers", "randint bounds must be integers")
    if not low < high:
        raise _error(f"{kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise _error(f"loguniform needs low > 0, got [{low}, {high}]")
    return bounds


_BOUND = Union[StrictInt, Annotated[StrictFloat, Field(allow_inf_nan=False)]]  # not bool, not inf or nan
_RANGE = Annotated[list[_BOUND], pydantic.BeforeValidator(_pair), pydantic.AfterValidator(_ordered)]
_VALUES = Annotated[list, Field(min_length=1)]


def _or_none(value: Any) -> Any:
    return value or None  # an empty `base:` or `tune:` means the defaults


class _Spec(pydantic.BaseModel):
    """One searched key's `{KIND: ARGS}`: exactly one of KINDS."""

    model_config = ConfigDict(extra="forbid", strict=True)

    choice: _VALUES = None
    grid: _VALUES = None
    uniform: _RANGE = None
    loguniform: _RANGE = None
    randint: _RANGE = None

    @pydantic.model_validator(mode="before")
    @classmethod
    def _one_kind(cls, data: Any) -> Any:
        if not isinstance(data, dict) or len(data) != 1:
            raise _error(f"expected exactly one of {list(KINDS)} (e.g. `{{choice: [a, b]}}`), got {data!r}")
        return data

    def param(self, path: str) -> Param:
        kind = next(iter(self.model_fields_set))
        args = getattr(self, kind)
        if kind in ("choice", "grid"):
            return Param(path, kind, values=tuple(args))
        return Param(path, kind, low=args[0], high=args[1])


class _SpaceFile(pydantic.BaseModel):
    """A space file's top level (TOP_LEVEL, in that order: errors are reported in it)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    description: Any = None
    base: Annotated[dict | None, pydantic.BeforeValidator(_or_none)] = None
    params: Annotated[dict[Any, _Spec], Field(min_length=1)]
    tune: Annotated[TuneSettings | None, pydantic.BeforeValidator(_or_none)] = None


def _space_error(errors: list[dict], data: Any) -> str:
    """pydantic's first error (top-level keys, then base, params in file order, tune; unknown keys first)
    as the one line a ConfigError gives after the file name."""
    first = min(errors, key=lambda e: _precedence(e, data))
    loc = first["loc"]
    if not loc:
        return f"expected a mapping at the top level, got {type(data).__name__}"
    if loc[0] not in TOP_LEVEL:
        return f"unknown top-level key(s) {_unknown(errors, ())}; known: {list(TOP_LEVEL)}"
    if loc[0] == "base":
        return f"base: expected a mapping of sections, got {first['input']!r}"
    if loc[0] == "params" and len(loc) == 1:
        return "params: expected a non-empty mapping of `section.field: {kind: ...}`"
    if loc[0] == "params":
        return f"params.{loc[1]}: {_spec_error(first, loc[2:], data['params'][loc[1]])}"
    return _tune_error(errors, first, loc[1:])


def _precedence(error: dict, data: Any) -> tuple:
    loc = error["loc"]
    rank = TOP_LEVEL.index(loc[0]) if loc and loc[0] in TOP_LEVEL else -1
    at = list(data["params"]).index(loc[1]) if rank == TOP_LEVEL.index("params") and len(loc) > 1 else 0
    return rank, at, error["type"] != "extra_forbidden", len(loc)


def _unknown(errors: list[dict], at: tuple) -> list:
    return sorted((e["loc"][-1] for e in errors if e["type"] == "extra_forbidden" and e["loc"][:-1] == at), key=str)


def _spec_error(error: dict, loc: tuple, spec: Any) -> str:
    if error["type"] == "space":
        return error["ctx"]["message"]
    kind = loc[0]
    if error["type"] == "extra_forbidden":
        return f"unknown distribution {kind!r}; known: {list(KINDS)}"
    args = spec[kind]
    if kind in ("choice", "grid"):
        return f"{kind} needs a non-empty list of values, got {args!r}"
    if error["type"] == "integers":
        return f"randint bounds must be integers, got {args!r}"
    if error["type"] == "pair":
        return f"{kind} needs [low, high], got {args!r}"
    return f"{kind} bounds must be finite numbers, got {args!r}"


def _tune_error(errors: list[dict], error: dict, loc: tuple) -> str:
    if not loc:
        return f"tune: expected a mapping, got {error['input']!r}"
    if error["type"] == "extra_forbidden":
        return f"tune: unknown key(s) {_unknown(errors, ('tune',))}; known: {sorted(TuneSettings.model_fields)}"
    if error["type"] == "space":
        return error["ctx"]["message"]
    return f"tune.{loc[0]} must be {TuneSettings.model_fields[loc[0]].description}, got {error['input']!r}"


def _check_space(space: SearchSpace, where: str) -> None:
    """Validates base and every searched value against TrainConfig (the trainable builds exactly this)."""
    try:
        base_config = TrainConfig.from_dict(resolve(space.base, {}))
    except ConfigError as error:
        raise ConfigError(f"{where}: base: {error}") from None
    sections = _section_types()
    seen = set()
    for param in space.params:
        at = f"{where}: params.{param.path}"
        if param.path in seen:
            raise ConfigError(f"{at}: searched twice")
        seen.add(param.path)
        section, _, key = param.path.partition(".")
        if section not in sections:
            raise ConfigError(f"{at}: unknown section {section!r}; known: {sorted(sections)}")
        if key:
            known = [f.name for f in dataclasses.fields(sections[section])]
            if key not in known:
                raise ConfigError(f"{at}: unknown field {key!r} of section {section!r}; known: {known}")
            if param.path in NOT_SEARCHABLE:
                raise ConfigError(f"{at}: cannot be searched ({NOT_SEARCHABLE[param.path]})")
        elif param.kind not in ("choice", "grid"):
            raise ConfigError(f"{at}: a whole section takes choice or grid of mappings, not {param.kind}")
        if param.kind in RANGE_KINDS:
            hint = _field_hint(sections[section], key)
            if param.kind != "randint" and hint is not float:
                raise ConfigError(f"{at}: {param.kind} draws floats but {param.path} is {_hint_name(hint)}"
                                  f"{'; use randint' if hint is int else ''}")
            if param.kind == "randint" and hint not in (int, float):
                raise ConfigError(f"{at}: randint draws integers but {param.path} is {_hint_name(hint)}")
        for value in _probe_values(param):
            _check_value(space.base, section, key, value, at)
    tune = space.tune
    max_t = tune.max_t or base_config.optim.epochs
    if tune.scheduler == "asha" and max_t < tune.grace_period:
        raise ConfigError(f"{where}: tune.grace_period ({tune.grace_period}) exceeds the epochs ({max_t})")
    if tune.mode != METRICS_MODES.get(tune.metric, "max"):
        raise ConfigError(f"{where}: tune.mode {tune.mode!r} does not suit metric {tune.metric!r}")


def _field_hint(section_cls: type, key: str):
    hint = typing.get_type_hints(section_cls)[key]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = inner[0] if len(inner) == 1 else hint
    return hint


def _hint_name(hint) -> str:
    return getattr(hint, "__name__", str(hint))


def _probe_values(param: Param) -> list:
    if param.kind in ("choice", "grid"):
        return list(param.values)
    if param.kind == "randint":
        return [param.low, param.high - 1]  # high is exclusive
    return [param.low, param.high]


def _check_value(base: dict, section: str, key: str, value: Any, where: str) -> None:
    """Builds the TrainConfig `value` would give, with the field made active (e.g. loss.kind set to
    class_balanced_bce for loss.pos_weight_scale), so that type and range errors surface now."""
    if key:
        if section == "model" and key == "name":
            _check_architecture(value, where)
        overrides = {section: {key: value}}
        condition = ACTIVE_WHEN.get((section, key))
        if condition:
            overrides = merge(overrides, {condition[0]: {condition[1]: condition[2]}})
        sample = {}
    else:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: each alternative of a whole section must be a mapping, got {value!r}")
        if section == "model" and "name" in value:
            _check_architecture(value["name"], where)
        overrides, sample = {}, {section: value}
    try:
        TrainConfig.from_dict(resolve(merge(base, overrides), sample))
    except ConfigError as error:
        raise ConfigError(f"{where}: value {value!r}: {error}") from None


def _check_architecture(name: Any, where: str) -> None:
    if name not in list_models():
        raise ConfigError(f"{where}: unknown architecture {name!r}; registered: {list_models()}")
