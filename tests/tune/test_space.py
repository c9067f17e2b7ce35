"""Search-space files: the grammar, every kind of bad input (each stops with a ConfigError naming
the offending path), resolution of a trial's config, and the shipped tune_spaces/*.yaml."""
import glob
import os

import pytest
import yaml

from thorax_ray.config_io import ConfigError
from thorax_ray.train.config import TrainConfig
from thorax_ray.tune.space import load_space, parse_space, resolve
from thorax_ray.tune.tune import max_concurrent_trials

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = sorted(glob.glob(os.path.join(REPO, "tune_spaces", "*.yaml")))


def space(params, base=None, tune=None, **top):
    data = {"base": base or {"model": {"name": "mlp"}, "optim": {"epochs": 3}}, "params": params, **top}
    if tune is not None:
        data["tune"] = tune
    return parse_space(data, name="t", where="t.yaml")


def test_grammar_maps_to_tune_domains():
    from ray.tune.search.sample import Categorical, Float, Integer

    s = space({"optim.lr": {"loguniform": [1e-5, 1e-1]}, "optim.weight_decay": {"uniform": [0, 1e-3]},
               "data.batch_size": {"randint": [16, 65]}, "model.name": {"choice": ["mlp", "fusion", "small_cnn"]},
               "loss.kind": {"grid": ["bce", "focal"]}})
    domains = s.param_space()
    assert isinstance(domains["optim.lr"], Float) and isinstance(domains["optim.weight_decay"], Float)
    assert isinstance(domains["data.batch_size"], Integer) and isinstance(domains["model.name"], Categorical)
    assert domains["loss.kind"] == {"grid_search": ["bce", "focal"]}
    assert s.grid_size == 2 and s.tune.metric == "val_mean_auroc" and s.tune.mode == "max"


def test_resolve_drops_fields_inactive_for_the_chosen_loss_and_model():
    base = {"model": {"name": "mlp", "backbone": "resnet18"}, "loss": {"kind": "class_balanced_bce", "pos_weight_scale": 2.0}}
    focal = TrainConfig.from_dict(resolve(base, {"loss.kind": "focal", "loss.focal_gamma": 1.0}))
    assert focal.loss.kind == "focal" and focal.loss.pos_weight_scale == 1.0 and focal.loss.focal_gamma == 1.0
    weighted = TrainConfig.from_dict(resolve(base, {"loss.focal_gamma": 3.0, "model.name": "fusion"}))
    assert weighted.loss.pos_weight_scale == 2.0 and weighted.loss.focal_gamma == 2.0  # focal_gamma inactive
    assert weighted.model.name == "fusion" and weighted.model.backbone == "resnet18"
    section = TrainConfig.from_dict(resolve(base, {"loss": {"kind": "bce"}}))
    assert section.loss.kind == "bce" and section.loss.pos_weight_scale == 1.0
    features = TrainConfig.from_dict(resolve(base, {"model.metadata_features": ["age", "sex"]}))
    assert features.model.metadata_features == ("age", "sex")


@pytest.mark.parametrize("params, message", [
    ({"optim.lrr": {"uniform": [0.1, 0.2]}}, "params.optim.lrr: unknown field 'lrr' of section 'optim'"),
    ({"optimizer.lr": {"uniform": [0.1, 0.2]}}, "params.optimizer.lr: unknown section 'optimizer'"),
    ({"optim.lr": {"uniform": [0.1, 0.01]}}, "params.optim.lr: uniform needs low < high"),
    ({"optim.lr": {"uniform": [0.1, 0.1]}}, "params.optim.lr: uniform needs low < high"),
    ({"data.batch_size": {"randint": [64, 16]}}, "params.data.batch_size: randint needs low < high"),
    ({"optim.lr": {"loguniform": [0, 0.1]}}, "params.optim.lr: loguniform needs low > 0"),
    ({"optim.lr": {"loguniform": [-1e-3, 0.1]}}, "loguniform needs low > 0"),
    ({"optim.lr": {"uniform": [0.1]}}, "uniform needs [low, high]"),
    ({"optim.lr": {"uniform": ["a", 0.1]}}, "bounds must be finite numbers"),
    ({"data.batch_size": {"randint": [1.5, 8]}}, "randint bounds must be integers"),
    ({"optim.lr": {"uniform": [-0.1, 0.1]}}, "params.optim.lr: value -0.1"),  # outside OptimConfig's range
    ({"model.name": {"choice": ["mlp", "vgg16"]}}, "params.model.name: unknown architecture 'vgg16'"),
    ({"model": {"choice": [{"name": "densenet"}]}}, "params.model: unknown architecture 'densenet'"),
    ({"model.backbone": {"choice": ["mlp"]}}, "unknown fusion backbone 'mlp'"),
    ({"optim.lr": {"normal": [0, 1]}}, "params.optim.lr: unknown distribution 'normal'"),
    ({"optim.lr": {"choice": [0.1], "grid": [0.2]}}, "expected exactly one of"),
    ({"optim.lr": 0.1}, "expected exactly one of"),
    ({"optim.lr": {"choice": ["fast"]}}, "params.optim.lr: value 'fast': config.optim.lr: expected float"),
    ({"data.batch_size": {"choice": [16.5]}}, "config.data.batch_size: expected int"),
    ({"data.batch_size": {"uniform": [16, 64]}}, "uniform draws floats but data.batch_size is int; use randint"),
    ({"augment.hflip": {"randint": [0, 2]}}, "randint draws integers but augment.hflip is bool"),
    ({"model.metadata_features": {"choice": ["age"]}}, "expected a list"),
    ({"model.metadata_features": {"choice": [["age", "height"]]}}, "unknown metadata feature(s) ['height']"),
    ({"optim.lr": {"choice": []}}, "choice needs a non-empty list"),
    ({"optim.lr": {"grid": []}}, "grid needs a non-empty list"),
    ({"loss.kind": {"choice": ["bce", "dice"]}}, "params.loss.kind: value 'dice'"),
    ({"loss.kind": {"choice": ["dice"]}}, "unknown loss kind 'dice'"),
    ({"loss.pos_weight_scale": {"uniform": [-1.0, 2.0]}}, "pos_weight_scale must be a finite number > 0"),
    ({"loss.per_class_pos_weight": {"choice": [[1.0, 2.0]]}}, "per_class_pos_weight needs 14 values"),
    ({"loss": {"choice": [{"kind": "focal", "gamma": 2}]}}, "params.loss: value"),
    ({"loss": {"uniform": [0, 1]}}, "a whole section takes choice or grid of mappings"),
    ({"loss": {"choice": ["bce"]}}, "each alternative of a whole section must be a mapping"),
    ({"optim.scheduler": {"choice": ["step"]}}, "unknown scheduler 'step'"),
    ({"run.name": {"choice": ["a"]}}, "params.run.name: cannot be searched"),
    ({"optim.epochs": {"choice": [2, 4]}}, "params.optim.epochs: cannot be searched"),
])
def test_bad_params_name_the_path(params, message):
    with pytest.raises(ConfigError) as error:
        space(params)
    assert message in str(error.value)
    assert str(error.value).startswith("t.yaml")


@pytest.mark.parametrize("data, message", [
    ({"params": {"optim.lr": {"choice": [0.1]}}, "bases": {}}, "unknown top-level key(s) ['bases']"),
    ({"params": {}}, "params: expected a non-empty mapping"),
    ({"base": {"model": {"name": "mlp"}}}, "params: expected a non-empty mapping"),
    ({"params": [1, 2]}, "params: expected a non-empty mapping"),
    ({"base": {"optim": {"lrr": 1}}, "params": {"optim.lr": {"choice": [0.1]}}}, "base: config.optim: unknown key(s) ['lrr']"),
    ({"base": {"model": {"name": "vgg"}}, "params": {"optim.lr": {"choice": [0.1]}}}, "base: config.model: unknown architecture 'vgg'"),
    ({"base": [1], "params": {"optim.lr": {"choice": [0.1]}}}, "base: expected a mapping"),
    ({"params": {"optim.lr": {"choice": [0.1]}}, "tune": {"metrc": "x"}}, "tune: unknown key(s) ['metrc']"),
    ({"params": {"optim.lr": {"choice": [0.1]}}, "tune": {"metric": "accuracy"}}, "tune.metric: unknown metric"),
    ({"params": {"optim.lr": {"choice": [0.1]}}, "tune": {"mode": "up"}}, "tune.mode must be max or min"),
    ({"params": {"optim.lr": {"choice": [0.1]}}, "tune": {"metric": "train_loss"}}, "does not suit metric"),
    ({"params": {"optim.lr": {"choice": [0.1]}}, "tune": {"grace_period": 0}}, "tune.grace_period must be an integer >= 1"),
    ({"params": {"optim.lr": {"choice": [0.1]}}, "tune": {"num_samples": "4"}}, "tune.num_samples must be an integer"),
    ({"params": {"optim.lr": {"choice": [0.1]}}, "tune": {"reduction_factor": 1}}, "reduction_factor must be a number > 1"),
    ({"params": {"optim.lr": {"choice": [0.1]}}, "tune": {"scheduler": "pbt"}}, "tune.scheduler must be asha or none"),
    ({"base": {"optim": {"epochs": 2}}, "params": {"optim.lr": {"choice": [0.1]}}, "tune": {"grace_period": 3}},
     "tune.grace_period (3) exceeds the epochs (2)"),
    ([1, 2], "expected a mapping at the top level"),
])
def test_bad_files_name_the_problem(data, message):
    with pytest.raises(ConfigError) as error:
        parse_space(data, name="t", where="t.yaml")
    assert message in str(error.value)


def test_load_space_from_yaml_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"params": {"optim.lr": {"loguniform": [1e-4, 1e-2]}}}))
    assert load_space(str(path)).name == "mine"
    path.write_text("params:\n  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}\n  optim.lrr: {choice: [1]}\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: params.optim.lrr: unknown field 'lrr'"):
        load_space(str(path))
    with pytest.raises(ConfigError, match="config file not found"):
        load_space(str(tmp_path / "missing.yaml"))


def test_command_line_overrides_are_validated_too():
    s = space({"optim.lr": {"choice": [0.1]}})
    assert s.with_base({"optim": {"epochs": 5}}).base_config().optim.epochs == 5
    with pytest.raises(ConfigError, match="with command-line overrides"):
        s.with_base({"data": {"batch_size": 0}})


@pytest.mark.parametrize("workers, cpus, cluster, expected", [
    (1, 1.0, 4, 2), (2, 1.0, 4, 1), (2, 1.0, 2, 1), (4, 1.0, 64, 12), (1, 2.0, 16, 5)])
def test_concurrency_bound_by_cpus(workers, cpus, cluster, expected):
    assert max_concurrent_trials(workers, cpus, cpus=cluster) == expected


@pytest.mark.parametrize("workers, cpus, gpus, expected", [
    (1, 8, 0, 1),  # a cold cluster that can launch no GPU: still one trial (it waits or fails loudly)
    (1, 192 * 16, 8 * 16, 128),  # 16 p5 nodes: bound by 128 GPUs, not 1,536 trials by CPUs
    (8, 192, 8, 1), (2, 200, 8, 4), (4, 4 * 16 + 16, 16, 4)])
def test_concurrency_bound_by_gpus_as_well(workers, cpus, gpus, expected):
    assert max_concurrent_trials(workers, 1.0, cpus=cpus, gpus=gpus, use_gpu=True) == expected


def test_shipped_spaces_cover_the_issue_and_validate():
    names = {os.path.basename(p) for p in SHIPPED}
    assert {"smoke.yaml", "cnn.yaml", "loss_weights.yaml", "full.yaml"} <= names
    spaces = {os.path.basename(p): load_space(p) for p in SHIPPED}
    for s in spaces.values():
        assert s.params and s.tune.metric == "val_mean_auroc"
    searched = {p.path for s in spaces.values() for p in s.params}
    assert {"model.name", "optim.lr", "optim.weight_decay", "data.batch_size", "data.size",
            "model.metadata_features"} <= searched
    full = spaces["full.yaml"]
    architectures = next(p.values for p in full.params if p.path == "model.name")
    assert {"mlp", "fusion", "densenet121"} <= set(architectures)
    loss = spaces["loss_weights.yaml"]
    kinds = set()
    for p in loss.params:
        if p.path == "loss":
            kinds |= {v["kind"] for v in p.values}
        if p.path == "loss.kind":
            kinds |= set(p.values)
    assert kinds == {"bce", "wang_bce", "class_balanced_bce", "focal"}
    assert any(p.path in ("loss", "loss.per_class_pos_weight") for p in loss.params)
    assert spaces["smoke.yaml"].base_config().run.workers == 1


def test_numbers_yaml_reads_as_text_are_accepted_in_ranges_and_choices():
    """PyYAML reads `1e-3` (no dot in the mantissa) as the string '1e-3'; before, the space was rejected."""
    s = parse_space(yaml.safe_load("params:\n  optim.lr: {loguniform: [1e-5, 1e-2]}\n"
                                   "  optim.weight_decay: {choice: [1e-6, 1e-4]}\n"), name="t", where="t.yaml")
    lr = next(p for p in s.params if p.path == "optim.lr")
    assert (lr.low, lr.high) == (1e-5, 1e-2)
    assert TrainConfig.from_dict(resolve(s.base, {"optim.weight_decay": "1e-4"})).optim.weight_decay == 1e-4


@pytest.mark.parametrize("tune, message", [
    ({"metric": 5}, "tune.metric must be one of ['train_loss', 'val_mean_auroc'] or val_auroc_<finding>, got 5"),
    ({"seed": "x"}, "tune.seed must be an integer or null, got 'x'"),
    ({"max_t": True}, "tune.max_t must be an integer >= grace_period, got True"),
    ({"reduction_factor": float("nan")}, "tune.reduction_factor must be a number > 1, got nan"),
    ({"zz": 1, "mode": "x", "aa": 2}, "tune: unknown key(s) ['aa', 'zz']; known: ['grace_period', 'max_t',"),
    ("x", "tune: expected a mapping, got 'x'"),
])
def test_tune_settings_are_checked_by_type(tune, message):
    """The `tune:` section is a pydantic model: a value of the wrong type is refused (before, a metric of 5
    crashed with AttributeError and a seed of 'x' or a max_t of true reached Ray Tune)."""
    with pytest.raises(ConfigError) as error:
        parse_space({"params": {"optim.lr": {"choice": [0.1]}}, "tune": tune}, name="t", where="t.yaml")
    assert str(error.value).startswith(f"t.yaml: {message}")


def test_empty_sections_mean_defaults_and_numbers_keep_their_type():
    s = parse_space({"params": {"data.batch_size": {"randint": [16, 65]},
                                "optim.weight_decay": {"uniform": [0, "1e-3"]}},
                     "base": None, "tune": {"reduction_factor": 3}, "description": None}, name="t", where="t.yaml")
    assert s.base == {} and s.description == "" and s.tune.reduction_factor == 3
    assert isinstance(s.tune.reduction_factor, int) and s.tune.num_samples == 4
    batch, lr = s.params
    assert (batch.low, batch.high) == (16, 65) and isinstance(batch.low, int)
    assert (lr.low, lr.high) == (0, 1e-3) and isinstance(lr.low, int) and isinstance(lr.high, float)


@pytest.mark.parametrize("params, message", [
    ({"optim.lr": {"uniform": ["a"]}}, "params.optim.lr: uniform needs [low, high], got ['a']"),
    ({"data.batch_size": {"randint": ["4", 8]}},
     "params.data.batch_size: randint bounds must be integers, got ['4', 8]"),
    ({"optim.lr": {"uniform": [float("inf"), 1]}},
     "params.optim.lr: uniform bounds must be finite numbers, got [inf, 1]"),
    ({"optim.lr": {"choice": None}}, "params.optim.lr: choice needs a non-empty list of values, got None"),
    ({"a.b": {"normal": 1}, "optim.lr": {"uniform": [2, 1]}}, "params.a.b: unknown distribution 'normal'"),
])
def test_param_errors_word_the_raw_value_and_come_in_file_order(params, message):
    with pytest.raises(ConfigError) as error:
        space(params, tune={"mode": "x"})  # a tune error too: params come first
    assert str(error.value).startswith(f"t.yaml: {message}")
