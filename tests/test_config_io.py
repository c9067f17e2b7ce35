"""thorax_ray.config_io.from_dict on small dataclass trees of its own: what is coerced, what is refused, and
that every refusal is one ConfigError naming the dotted key (pydantic's errors translated)."""
import dataclasses
import pickle
from dataclasses import dataclass, field

import pytest

from thorax_ray.config_io import ConfigError, from_dict, to_dict


@dataclass(frozen=True)
class Inner:
    rate: float = 0.5
    count: int = 1
    names: tuple[str, ...] = ("a",)
    label: str | None = None
    flag: bool = False
    either: str | bool = "auto"  # a union of several types: passed through for the dataclass to check

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None
    scale: float = 1.0


def test_defaults_and_coercions():
    assert from_dict(Outer, None) == Outer() == from_dict(Outer, {})
    config = from_dict(Outer, {"inner": {"rate": "1e-3", "count": 2, "names": ["x", "y"], "either": True},
                               "maybe": {"rate": 2}, "scale": 3})
    assert config.inner == Inner(rate=0.001, count=2, names=("x", "y"), either=True)
    assert config.maybe == Inner(rate=2.0) and isinstance(config.maybe.rate, float) and config.scale == 3.0
    assert from_dict(Outer, {"maybe": None, "inner": {"label": None}}) == Outer()


def test_result_is_the_plain_frozen_dataclass():
    config = from_dict(Outer, {"inner": {"count": 3}})
    assert type(config) is Outer and type(config.inner) is Inner
    assert [f.name for f in dataclasses.fields(config)] == ["inner", "maybe", "scale"]
    assert dataclasses.replace(config, scale=2.0).inner.count == 3
    assert pickle.loads(pickle.dumps(config)) == config
    assert from_dict(Outer, to_dict(config)) == config


@pytest.mark.parametrize("data, message", [
    ({"inner": {"rat": 1, "cnt": 2}},
     "cfg.inner: unknown key(s) ['cnt', 'rat']; known: ['count', 'either', 'flag', 'label', 'names', 'rate']"),
    ({"outer": 1}, "cfg: unknown key(s) ['outer']; known: ['inner', 'maybe', 'scale']"),
    ({"maybe": {"x": 1}}, "cfg.maybe: unknown key(s) ['x']; known: ['count',"),
    ({3: 1}, "cfg: unknown key(s) [3]; known:"),
    ({"inner": {"count": "2"}}, "cfg.inner.count: expected int, got '2'"),
    ({"inner": {"count": 2.0}}, "cfg.inner.count: expected int, got 2.0"),
    ({"inner": {"count": True}}, "cfg.inner.count: expected int, got True"),
    ({"inner": {"rate": True}}, "cfg.inner.rate: expected float, got True"),
    ({"inner": {"rate": "fast"}}, "cfg.inner.rate: expected float, got 'fast'"),
    ({"inner": {"rate": "inf"}}, "cfg.inner.rate: expected a finite float, got 'inf'"),
    ({"inner": {"rate": None}}, "cfg.inner.rate: expected float, got None"),
    ({"inner": {"flag": 1}}, "cfg.inner.flag: expected bool, got 1"),
    ({"inner": {"label": 5}}, "cfg.inner.label: expected str, got 5"),
    ({"inner": {"names": "a"}}, "cfg.inner.names: expected a list, got 'a'"),
    ({"inner": None}, "cfg.inner: expected a mapping, got None"),
    ({"maybe": [1]}, "cfg.maybe: expected a mapping, got [1]"),
    ({"inner": {"count": -1}}, "cfg.inner: count must be >= 0, got -1"),
])
def test_refusals_name_the_dotted_key(data, message):
    with pytest.raises(ConfigError) as error:
        from_dict(Outer, data, where="cfg")
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_unknown_keys_are_reported_before_type_errors():
    with pytest.raises(ConfigError, match=r"^cfg: unknown key\(s\) \['zz'\]"):
        from_dict(Outer, {"inner": {"count": "x"}, "zz": 1}, where="cfg")
