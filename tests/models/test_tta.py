"""Test-time augmentation (thorax_ray.models.tta): the exact views, the mean of probabilities (not of
logits), the fusion model's features passed to every view, metadata-only models refused, and `predict`
with a TTA. No Ray."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thorax_ray.data.preprocess import Batch, normalise_images, preprocessing_contract
from thorax_ray.labels import NUM_FINDINGS
from thorax_ray.models import MetadataFeatures, create_model
from thorax_ray.models.predict import predict_batches
from thorax_ray.models.registry import ModelSpec
from thorax_ray.models.tta import (TTA_KINDS, VIEWS, check_tta, describe_tta, hflip_mean_centres, tencrop_size,
                                   tta_probabilities, tta_views)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class PixelProbe(nn.Module):
    """logits[:, k] = sum over pixels of images * weights[k]: a known function of every pixel's position."""

    spec = ModelSpec("probe", "image")

    def __init__(self, size: int, seed: int = 0):
        super().__init__()
        self.weights = torch.randn(NUM_FINDINGS, size * size, generator=torch.Generator().manual_seed(seed)) / size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.weights.T


def _images(n: int = 3, size: int = 14, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_kinds_and_the_chexnet_resize():
    assert TTA_KINDS == ("none", "hflip", "tencrop") and [len(VIEWS[k]) for k in TTA_KINDS] == [1, 2, 10]
    assert tencrop_size(224) == 256 and tencrop_size(14) == 16 and tencrop_size(64) == 73


def test_views_are_the_image_its_flip_and_the_ten_crops_of_the_resized_image():
    images = _images(size=14)
    assert [v is images for v in tta_views(images, "none")] == [True]
    plain, flipped = tta_views(images, "hflip")
    assert torch.equal(plain, images) and torch.equal(flipped, images.flip(-1))
    assert torch.equal(flipped[..., 0], images[..., 13])  # column 0 of the flip is the last column
    # ten-crop at S = 14: resized to 16 (bilinear, antialias), then 14 x 14 crops cut by hand in torchvision's
    # order: four corners and the centre, then the same of the horizontally flipped resized image
    resized = F.interpolate(images, size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
    expected = []
    for source in (resized, resized.flip(-1)):
        expected += [source[..., :14, :14], source[..., :14, 2:], source[..., 2:, :14], source[..., 2:, 2:],
                     source[..., 1:15, 1:15]]
    views = list(tta_views(images, "tencrop"))
    assert len(views) == 10 and all(v.shape == images.shape for v in views)
    for name, view, manual in zip(VIEWS["tencrop"], views, expected):
        assert torch.equal(view, manual), name


@pytest.mark.parametrize("kind", TTA_KINDS)
def test_probabilities_are_the_mean_of_the_views_probabilities_not_of_their_logits(kind):
    model, images = PixelProbe(14), _images(size=14)
    logits = torch.stack([model(view) for view in tta_views(images, kind)])
    probabilities = tta_probabilities(model, images, kind=kind)
    assert probabilities.dtype == torch.float32 and probabilities.shape == (3, NUM_FINDINGS)
    torch.testing.assert_close(probabilities, torch.sigmoid(logits).mean(0))
    if kind != "none":  # the views differ, so the mean of probabilities is not the probability of the mean logit
        assert not torch.allclose(probabilities, torch.sigmoid(logits.mean(0)), atol=1e-4)


def test_hflip_of_a_flip_symmetric_image_gives_the_plain_probabilities():
    torch.manual_seed(0)
    model = create_model("small_cnn").eval()
    half = _images(n=2, size=64)[..., :32]
    symmetric = torch.cat([half, half.flip(-1)], dim=-1)
    with torch.no_grad():
        plain = tta_probabilities(model, symmetric, kind="none")
        torch.testing.assert_close(tta_probabilities(model, symmetric, kind="hflip"), plain)
        assert not torch.allclose(tta_probabilities(model, _images(n=2, size=64), kind="hflip"),
                                  tta_probabilities(model, _images(n=2, size=64), kind="none"))


class FeatureRecorder(nn.Module):
    """Records what each call got (fusion calling convention)."""

    spec = ModelSpec("recorder", "both")

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, images, features):
        self.calls.append((images, features))
        return images.mean((1, 2, 3))[:, None] + features.sum(1, keepdim=True) + torch.zeros(1, NUM_FINDINGS)


def test_fusion_gets_the_features_unchanged_with_every_view():
    recorder, images, features = FeatureRecorder(), _images(size=14), torch.randn(3, 5)
    tta_probabilities(recorder, images, features, kind="tencrop")
    assert len(recorder.calls) == 10 and all(f is features for _, f in recorder.calls)
    torch.manual_seed(0)
    fusion = create_model("fusion", backbone="small_cnn", metadata_features=MetadataFeatures(("age", "sex"))).eval()
    images = _images(n=2, size=64)
    features = torch.randn(2, 5)  # age and sex, encoded (as tests/models/test_fusion.py)
    with torch.no_grad():
        expected = (torch.sigmoid(fusion(images, features)) + torch.sigmoid(fusion(images.flip(-1), features))) / 2
        torch.testing.assert_close(tta_probabilities(fusion, images, features, kind="hflip"), expected)


def test_a_metadata_only_model_is_refused_in_one_line_and_unknown_kinds_too():
    mlp = create_model("mlp").eval()
    features = torch.zeros(2, 5)
    with pytest.raises(ValueError, match=r"^--tta hflip: model 'mlp' takes metadata only, no image to augment; "
                                         r"use --tta none$"):
        tta_probabilities(mlp, None, features, kind="hflip")
    with pytest.raises(ValueError, match=r"^--tta: unknown test-time augmentation 'vflip'; known: none, hflip, "):
        check_tta("vflip")
    check_tta("tencrop", create_model("small_cnn").spec)  # an image model: fine
    batch = Batch(image_index=["a", "b"], labels=torch.zeros(2, NUM_FINDINGS), images=None, features=features)
    with pytest.raises(ValueError, match="takes metadata only"):
        predict_batches(mlp, [batch], contract=preprocessing_contract(32), device=torch.device("cpu"), tta="tencrop")


def test_predict_batches_gives_the_tta_mean_and_unchanged_probabilities_without_tta():
    torch.manual_seed(0)
    model, contract = create_model("small_cnn").eval(), preprocessing_contract(32)
    pixels = torch.randint(0, 256, (4, 1, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    batch = Batch(image_index=list("abcd"), labels=torch.zeros(4, NUM_FINDINGS), images=pixels, features=None)
    images = normalise_images(pixels, contract, device=torch.device("cpu"))  # 40 px stored -> the model's 32
    with torch.no_grad():
        plain = torch.sigmoid(model(images)).numpy()
        for kind in TTA_KINDS:
            got = predict_batches(model, [batch], contract=contract, device=torch.device("cpu"), tta=kind)
            expected = plain if kind == "none" else tta_probabilities(model, images, kind=kind).numpy()
            np.testing.assert_array_equal(got.probabilities, expected)


def test_description_says_the_views_and_the_calibration_they_were_not_fitted_on():
    assert describe_tta("none", 224) == {"kind": "none", "views": ["image"], "view_size": 224,
                                         "probabilities": "sigmoid of the model's logits on the un-augmented image"}
    ten = describe_tta("tencrop", 224)
    assert ten["resized_to"] == 256 and len(ten["views"]) == 10 and ten["views"][4] == "centre"
    assert "256x256" in ten["views_made"] and "not of the logits" in ten["probabilities"]
    assert "un-augmented validation predictions" in ten["calibration"]
    assert describe_tta("hflip", 64)["views"] == ["image", "hflip"]


def test_hflip_mean_centres_are_the_midpoints_and_keep_bin_centres():
    # stride-16 receptive-field centres of a 64 px input (cell i centred on pixel 16 i): the flipped image's
    # cell i, flipped back, is centred on pixel 16 i + 15, so the mean sits at 16 i + 7.5 = the bin centre
    centres = [(16 * i + 0.5) / 64 for i in range(4)]
    assert hflip_mean_centres(centres) == pytest.approx([(i + 0.5) / 4 for i in range(4)])
    assert hflip_mean_centres([0.1, 0.5, 0.9]) == pytest.approx([0.1, 0.5, 0.9])


def test_the_job_check_reads_the_checkpoints_description_not_its_weights(tmp_path):
    """Before Ray starts the job learns the model kind from checkpoint.json; model.pt is read once, later."""
    from tests.helpers import make_checkpoint
    from thorax_ray.checkpoint import MODEL_FILE
    from thorax_ray.models.tta import check_checkpoint_tta

    for name in ("mlp", "small_cnn"):
        make_checkpoint(tmp_path / name, name, size=32)
        os.remove(tmp_path / name / MODEL_FILE)  # a read of the weights would fail
    check_checkpoint_tta(str(tmp_path / "small_cnn"), "hflip")
    with pytest.raises(ValueError, match="--tta hflip: model 'mlp' takes metadata only"):
        check_checkpoint_tta(str(tmp_path / "mlp"), "hflip")
