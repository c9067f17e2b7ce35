"""Image + metadata fusion model."""
from __future__ import annotations

import pytest
import torch

from thorax_ray.labels import NUM_FINDINGS
from thorax_ray.models import MetadataFeatures, create_model
from thorax_ray.models.fusion import FusionModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("fusion", backbone="small_cnn", metadata_features=MetadataFeatures(("age", "sex"))).eval()


def _inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(2, 1, 64, 64, generator=gen), torch.randn(2, 5, generator=gen)


def test_shapes_and_attributes(model):
    assert isinstance(model, FusionModel)
    assert model.spec.input_kind == "both" and model.spec.uses_images and model.spec.uses_metadata
    assert model.backbone.arch == "small_cnn"
    assert model.target_layer is model.backbone.target_layer
    images, features = _inputs()
    assert model(images, features).shape == (2, NUM_FINDINGS)
    assert model.features(images).shape == (2, model.feature_dim, 4, 4)
    assert model.classifier.in_features == model.feature_dim + 64


def test_output_depends_on_metadata_and_image(model):
    images, features = _inputs()
    with torch.no_grad():
        base = model(images, features)
        other_meta = model(images, features + 1.0)
        other_image = model(torch.flip(images, dims=(3,)) * 2.0, features)
    assert not torch.allclose(base, other_meta)
    assert not torch.allclose(base, other_image)


def test_decomposition_for_fast_cam(model):
    images, features = _inputs()
    with torch.no_grad():
        logits = model(images, features)
        fmap = model.features(images)
        torch.testing.assert_close(model.pool_and_classify(fmap, features), logits)
        manual = (fmap.mean((2, 3)) @ model.image_classifier_weight.T
                  + model.embed(features) @ model.metadata_classifier_weight.T + model.classifier.bias)
    torch.testing.assert_close(manual, logits, atol=1e-5, rtol=1e-5)


def test_layer_gradcam_on_image_part(model):
    from captum.attr import LayerGradCam

    images, features = _inputs()
    attribution = LayerGradCam(model, model.target_layer).attribute(
        images, target=3, additional_forward_args=(features,))
    assert attribution.shape == (2, 1, 4, 4) and torch.isfinite(attribution).all()


def test_default_backbone_is_densenet121():
    model = create_model("fusion")
    assert model.backbone.arch == "densenet121" and model.metadata_features == MetadataFeatures()
    assert model.build_config["kwargs"] == {}
