import pytest

from thorax_ray.config import ConfigError
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
])
def test_bad_config_is_a_clear_error(data, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(data)


def test_missing_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        TrainConfig.from_yaml(str(tmp_path / "none.yaml"))
