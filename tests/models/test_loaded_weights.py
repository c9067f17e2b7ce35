"""Pretrained weights read once (by the training job's driver) and handed to workers: a model built from them is
the model built from the file, and says it started from that file."""
import torch
import torchvision

from thorax_ray.models import create_model
from thorax_ray.models.pretrained import LoadedWeights, read_model_weights


def test_weights_read_once_build_the_same_model_as_the_file(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    weights = read_model_weights("fusion", str(path), backbone="resnet18")
    assert isinstance(weights, LoadedWeights) and weights.source == str(path)
    assert read_model_weights("mlp", str(path)) is None and read_model_weights("resnet18", None) is None
    from_file, from_memory = create_model("resnet18", pretrained=str(path)), create_model("resnet18", pretrained=weights)
    for (name, a), (_, b) in zip(from_file.state_dict().items(), from_memory.state_dict().items()):
        if not name.startswith("classifier"):  # the new head is initialised at random
            torch.testing.assert_close(a, b)
    assert from_memory.build_config["init"] == from_file.build_config["init"]
    assert from_memory.build_config["init"]["kind"] == "weights_file"
    fusion = create_model("fusion", backbone="resnet18", pretrained=weights)
    torch.testing.assert_close(fusion.backbone.stem.weight, from_file.stem.weight)


def test_a_missing_weights_file_is_one_line_naming_the_flag(tmp_path):
    import pytest

    from thorax_ray.models import require_pretrained_weights

    with pytest.raises(FileNotFoundError, match=r"^--pretrained .*absent\.pth: not found$"):
        require_pretrained_weights("resnet18", str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match="no ImageNet weights for 'small_cnn'"):
        require_pretrained_weights("fusion", "imagenet", backbone="small_cnn")
