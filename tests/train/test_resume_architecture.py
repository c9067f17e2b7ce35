"""A resumed run continues the architecture its checkpoints hold (train.loop.check_same_architecture)."""
import pytest

from thorax_ray.models import create_model
from thorax_ray.train.config import SMALL_CNN_OUTPUT_STRIDE, TrainConfig
from thorax_ray.train.loop import check_same_architecture, model_kwargs


def test_small_cnn_defaults_to_the_localizing_stride_and_records_it():
    config = TrainConfig.from_dict({"model": {"name": "small_cnn"}})
    assert config.model.output_stride == SMALL_CNN_OUTPUT_STRIDE == 8
    assert create_model("small_cnn", **model_kwargs(config)).build_config["kwargs"] == {"output_stride": 8}
    fusion = TrainConfig.from_dict({"model": {"name": "fusion", "backbone": "small_cnn"}})
    assert model_kwargs(fusion) == {"backbone": "small_cnn", "backbone_kwargs": {"output_stride": 8}}
    assert TrainConfig.from_dict({"model": {"name": "densenet121"}}).model.output_stride is None


def test_a_run_of_another_stride_is_not_resumed_into_silently():
    """Strides change the computation, not the weights' shapes: strict loading alone would accept it."""
    old, new = create_model("small_cnn", output_stride=16), create_model("small_cnn", output_stride=8)
    new.load_state_dict(old.state_dict(), strict=True)  # what used to happen
    check_same_architecture("runs/x", old.build_config, dict(old.build_config))
    with pytest.raises(ValueError, match=r"runs/x: its checkpoints are of small_cnn \{'output_stride': 16\}.*"
                                         r"another --name"):
        check_same_architecture("runs/x", old.build_config, new.build_config)
