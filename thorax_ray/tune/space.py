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
documented in `tune_spaces/README.md`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from thorax_ray.config import ConfigError, load_yaml, merge
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


@dataclass(frozen=True)
class TuneSettings:
    metric: str = "val_mean_auroc"
    mode: str = "max"
    num_samples: int = 4  # trials (jobs/tune.py --trials overrides)
    scheduler: str = "asha"  # asha | none
    grace_period: int = 1  # epochs every trial runs before ASHA may stop it
    reduction_factor: float = 2.0
    max_t: int | None = None  # default: base optim.epochs
    seed: int | None = 0  # random search seed (reproducible samples); None: not seeded


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
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {unknown}; known: {list(TOP_LEVEL)}")
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"{where}: base: expected a mapping of sections, got {base!r}")
    params_data = data.get("params")
    if not isinstance(params_data, dict) or not params_data:
        raise ConfigError(f"{where}: params: expected a non-empty mapping of `section.field: {{kind: ...}}`")
    params = tuple(_parse_param(str(path), spec, f"{where}: params.{path}") for path, spec in params_data.items())
    space = SearchSpace(name=name, base=base, params=params, tune=_parse_tune(data.get("tune") or {}, where),
                        description=str(data.get("description") or ""))
    _check_space(space, where)
    return space


def _parse_param(path: str, spec: Any, where: str) -> Param:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where}: expected exactly one of {list(KINDS)} (e.g. `{{choice: [a, b]}}`), got {spec!r}")
    kind, args = next(iter(spec.items()))
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown distribution {kind!r}; known: {list(KINDS)}")
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: {kind} needs a non-empty list of values, got {args!r}")
        return Param(path, kind, values=tuple(args))
    if not isinstance(args, list) or len(args) != 2:
        raise ConfigError(f"{where}: {kind} needs [low, high], got {args!r}")
    low, high = (_number(bound) for bound in args)  # PyYAML reads 1e-3 (no dot) as text
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
            raise ConfigError(f"{where}: {kind} bounds must be finite numbers, got {args!r}")
    if kind == "randint" and not (isinstance(low, int) and isinstance(high, int)):
        raise ConfigError(f"{where}: randint bounds must be integers, got {args!r}")
    if not low < high:
        raise ConfigError(f"{where}: {kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0, got [{low}, {high}]")
    return Param(path, kind, low=low, high=high)


def _number(value: Any) -> Any:
    """A number written as text (`'1e-3'`) as a float; anything else unchanged (checked by the caller)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _parse_tune(data: Any, where: str) -> TuneSettings:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: tune: expected a mapping, got {data!r}")
    names = {f.name for f in dataclasses.fields(TuneSettings)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: tune: unknown key(s) {unknown}; known: {sorted(names)}")
    settings = TuneSettings(**data)
    if settings.metric not in METRICS_MODES and not settings.metric.startswith("val_auroc_"):
        raise ConfigError(f"{where}: tune.metric: unknown metric {settings.metric!r}; known: "
                          f"{sorted(METRICS_MODES)} or val_auroc_<finding>")
    if settings.mode not in ("max", "min"):
        raise ConfigError(f"{where}: tune.mode must be max or min, got {settings.mode!r}")
    if settings.scheduler not in ("asha", "none"):
        raise ConfigError(f"{where}: tune.scheduler must be asha or none, got {settings.scheduler!r}")
    for key in ("num_samples", "grace_period"):
        value = getattr(settings, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}: tune.{key} must be an integer >= 1, got {value!r}")
    if settings.max_t is not None and (not isinstance(settings.max_t, int) or settings.max_t < settings.grace_period):
        raise ConfigError(f"{where}: tune.max_t must be an integer >= grace_period, got {settings.max_t!r}")
    if isinstance(settings.reduction_factor, bool) or not isinstance(settings.reduction_factor, (int, float)) \
            or settings.reduction_factor <= 1:
        raise ConfigError(f"{where}: tune.reduction_factor must be a number > 1, got {settings.reduction_factor!r}")
    return settings


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
