import pytest

from thorax_ray.config_io import ConfigError
from thorax_ray.train.config import TrainConfig


def test_round_trip_through_plain_dict():
    config = TrainConfig().replace(model={"name": "fusion", "metadata_features": ["age", "sex"]}, optim={"lr": 3e-4})
    again = TrainConfig.from_dict(config.to_dict())
    assert again == config and again.model.metadata_features == ("age", "sex")


def test_yaml_with_flag_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: resnet18\noptim:\n  epochs: 3\n  lr: 0.01\nloss:\n  kind: focal\n  focal_gamma: 1.5\n")
    config = TrainConfig.from_yaml(str(path), {"optim": {"epochs": 7}})
    assert config.model.name == "resnet18" and config.optim.epochs == 7 and config.optim.lr == 0.01
    assert config.loss.kind == "focal" and config.loss.focal_gamma == 1.5
    assert config.run_name == "thorax-resnet18"


@pytest.mark.parametrize("data, message", [
    ({"optim": {"lr2": 1}}, r"config.optim: unknown key\(s\) \['lr2'\]"),
    ({"trainer": {}}, r"unknown key\(s\) \['trainer'\]"),
    ({"optim": {"epochs": "ten"}}, "config.optim.epochs: expected int"),
    ({"optim": {"scheduler": "step"}}, "unknown scheduler"),
    ({"loss": {"kind": "hinge"}}, "unknown loss kind"),
    ({"data": {"size": 4}}, "bad data config"),
    ({"data": {"limit": 0}}, "config.data: limit must be >= 1"),
    ({"run": {"workers": 0}}, "config.run: workers must be >= 1"),
    ({"run": {"name": "../../outside"}}, r"config.run: run name '../../outside' is not a plain file name"),
    ({"run": {"name": "/tmp/x"}}, "run name '/tmp/x' is not a plain file name"),
    ({"model": {"name": "densenet"}}, r"config.model: unknown architecture 'densenet'; registered: \["),
    ({"model": {"name": "fusion", "backbone": "mlp"}}, "unknown fusion backbone 'mlp'"),
    ({"model": {"metadata_features": ["height"]}}, r"unknown metadata feature\(s\) \['height'\]"),
    ({"optim": {"lr": "fast"}}, "config.optim.lr: expected float, got 'fast'"),
    ({"optim": {"lr": ".nan"}}, "config.optim.lr: expected float"),
])
def test_bad_config_is_a_clear_error(data, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(data)


def test_missing_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        TrainConfig.from_yaml(str(tmp_path / "none.yaml"))


def test_numbers_yaml_reads_as_text_are_accepted(tmp_path):
    """PyYAML reads `1e-3` (no dot) as the string '1e-3'; before, `lr: 1e-3` was rejected."""
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-3\n  weight_decay: 5E-5\nloss:\n  kind: focal\n  focal_alpha: 25e-2\n")
    config = TrainConfig.from_yaml(str(path))
    assert config.optim.lr == 0.001 and config.optim.weight_decay == 5e-5 and config.loss.focal_alpha == 0.25


@pytest.mark.parametrize("text, message", [
    ("optim:\n  lr: [0.1\nmodel: x\n", r"c.yaml, line 3: not valid YAML \("),
    ("optim:\n  lr: 0.1\n epochs: 2\n", r"c.yaml, line 3: not valid YAML \("),
    ("- a\n- b\n", "c.yaml: expected a mapping at the top level"),
])
def test_malformed_yaml_is_one_error_naming_file_and_line(tmp_path, text, message):
    """Before: a 50-line yaml.scanner traceback."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_yaml(str(path))


def test_binary_yaml_and_a_folder_are_errors_naming_the_file(tmp_path):
    (tmp_path / "c.yaml").write_bytes(b"\xff\xfe\x00model")
    with pytest.raises(ConfigError, match="c.yaml: not UTF-8 text"):
        TrainConfig.from_yaml(str(tmp_path / "c.yaml"))
    with pytest.raises(ConfigError, match="config file not found"):
        TrainConfig.from_yaml(str(tmp_path))


def test_a_bool_is_not_an_int():
    """pydantic's strict int: `epochs: true` was accepted as 1 before."""
    with pytest.raises(ConfigError, match=r"^config.optim.epochs: expected int, got True$"):
        TrainConfig.from_dict({"optim": {"epochs": True}})
