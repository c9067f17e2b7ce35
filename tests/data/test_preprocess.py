"""The preprocessing contract: typed in the package, plain in what it is stored in."""
from __future__ import annotations

import io

import pytest
import torch

from thorax_ray.data.preprocess import (IMAGE_MEAN, IMAGE_STD, PreprocessingContract, normalise_images,
                                        preprocessing_contract)


def test_contract_round_trips_through_a_weights_only_checkpoint():
    contract = preprocessing_contract(224)
    buffer = io.BytesIO()
    torch.save({"preprocessing": contract.to_dict()}, buffer)
    stored = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)["preprocessing"]
    assert stored == {"size": 224, "channels": 1, "input_dtype": "uint8", "scale": 1 / 255.0, "mean": IMAGE_MEAN,
                      "std": IMAGE_STD, "resize": "bilinear with box reduction (Pillow)"}
    assert PreprocessingContract.from_dict(stored) == contract


def test_a_stored_contract_without_newer_keys_takes_the_defaults_and_unknown_keys_fail():
    assert PreprocessingContract.from_dict({"size": 64}) == preprocessing_contract(64)
    with pytest.raises(TypeError):
        PreprocessingContract.from_dict({"size": 64, "colour": "rgb"})


def test_normalise_resizes_scales_and_standardises():
    images = torch.full((2, 1, 32, 32), 255, dtype=torch.uint8)
    out = normalise_images(images, preprocessing_contract(16), device=torch.device("cpu"))
    assert out.shape == (2, 1, 16, 16)
    assert torch.allclose(out, torch.full_like(out, (1.0 - IMAGE_MEAN) / IMAGE_STD))
