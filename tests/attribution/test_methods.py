"""The method registry and the Captum methods: integrated_gradients, occlusion, metadata_ig."""
from __future__ import annotations

import pytest
import torch
from captum.attr import Occlusion
from torch import nn

from thorax_ray.attribution import base as attribution_registry
from thorax_ray.attribution import default_method_name, get_method, list_methods
from thorax_ray.attribution.base import Attribution, AttributionMethod, attribute, register_method
from thorax_ray.labels import NUM_FINDINGS
from thorax_ray.models import MetadataFeatures, create_model

BUILTIN = {"cam", "fast_cam", "gradcam", "integrated_gradients", "occlusion", "metadata_ig"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return create_model("small_cnn").eval()


@pytest.fixture(scope="module")
def fusion():
    torch.manual_seed(0)
    return create_model("fusion", backbone="small_cnn", metadata_features=MetadataFeatures(("age", "sex"))).eval()


class QuadrantModel(nn.Module):
    """Linear model whose logits depend only on the top-left quadrant of the image (no spec)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        mask = torch.zeros(1, size, size)
        mask[:, : size // 2, : size // 2] = 1.0
        self.register_buffer("mask", mask)
        self.weight = nn.Parameter(torch.linspace(0.5, 2.0, NUM_FINDINGS))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images * self.mask).sum(dim=(1, 2, 3))[:, None] * self.weight


# ----- registry --------------------------------------------------------------------------------------


def test_registry_lists_and_rejects():
    assert BUILTIN <= set(list_methods())
    with pytest.raises(ValueError, match="unknown attribution method 'nope'.*fast_cam.*occlusion"):
        get_method("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_method("fast_cam")(type("Other", (AttributionMethod,), {}))


def test_register_custom_method(cnn):
    @register_method("_test_constant")
    class Constant(AttributionMethod):
        def attribute(self, images=None, features=None):
            return Attribution(self.name, maps=torch.ones(images.shape[0], NUM_FINDINGS, 2, 2))

    try:
        assert "_test_constant" in list_methods()
        result = get_method("_test_constant")(cnn).attribute(torch.zeros(3, 1, 32, 32))
        assert result.method == "_test_constant" and result.map_size == (2, 2)
    finally:
        attribution_registry._METHODS.pop("_test_constant", None)
    assert "_test_constant" not in list_methods()


def test_defaults_and_kind_checks(cnn, fusion):
    mlp = create_model("mlp")
    assert default_method_name(cnn) == default_method_name(fusion) == "fast_cam"  # ReLU'd; raw `cam` on request
    assert default_method_name(mlp) == "metadata_ig"
    with pytest.raises(ValueError, match="fast_cam.*'metadata'"):
        get_method("fast_cam")(mlp)
    with pytest.raises(ValueError, match="metadata_ig.*'image'"):
        get_method("metadata_ig")(cnn)
    with pytest.raises(TypeError):
        get_method("integrated_gradients")(cnn, n_stepz=3)
    with pytest.raises(ValueError, match="needs images|images must be"):
        get_method("fast_cam")(cnn).attribute(None)
    with pytest.raises(ValueError, match="metadata features"):
        get_method("fast_cam")(fusion).attribute(torch.zeros(1, 1, 32, 32), None)
    result = attribute(cnn, torch.zeros(1, 1, 32, 32))
    assert result.method == "fast_cam" and result.maps.shape == (1, NUM_FINDINGS, 2, 2)


# ----- integrated gradients --------------------------------------------------------------------------


def test_integrated_gradients_shapes_and_logits(cnn, fusion):
    images = torch.randn(2, 1, 32, 32)
    result = get_method("integrated_gradients")(cnn, n_steps=4).attribute(images)
    assert result.maps.shape == (2, NUM_FINDINGS, 2, 2)  # small_cnn's feature-map size at 32 px
    assert (result.maps >= 0).all() and result.maps.sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(result.logits, cnn(images))
    sized = get_method("integrated_gradients")(cnn, n_steps=2, map_size=(4, 8)).attribute(images)
    assert sized.maps.shape == (2, NUM_FINDINGS, 4, 8)
    features = torch.randn(2, 5)
    both = get_method("integrated_gradients")(fusion, n_steps=2).attribute(images, features)
    assert both.maps.shape == (2, NUM_FINDINGS, 2, 2)


def test_integrated_gradients_honours_internal_batch_size(cnn):
    seen: list[int] = []
    handle = cnn.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    try:
        get_method("integrated_gradients")(cnn, n_steps=8, internal_batch_size=4).attribute(torch.randn(2, 1, 32, 32))
    finally:
        handle.remove()
    # Per class 8 steps x 2 images in chunks of at most 4 (the logits pass uses model.features directly).
    assert max(seen) <= 4  # without internal batching a chunk would hold 16
    assert sum(seen) == NUM_FINDINGS * 8 * 2
    assert all(p.grad is None for p in cnn.parameters())


def test_integrated_gradients_localises():
    model = QuadrantModel(32)
    images = torch.rand(2, 1, 32, 32) + 0.5
    result = get_method("integrated_gradients")(model, n_steps=4, map_size=4).attribute(images)
    maps = result.maps
    assert maps.shape == (2, NUM_FINDINGS, 4, 4)
    assert (maps[:, :, :2, :2] > 0).all()
    assert maps[:, :, 2:, :].abs().max() == 0 and maps[:, :, :, 2:].abs().max() == 0
    # Linear model: IG = x * w, so the pooled map is mean(|x|) * w per cell.
    expected = torch.nn.functional.avg_pool2d(images, 8)[:, :, :2, :2] * model.weight[None, :, None, None]
    torch.testing.assert_close(maps[:, :, :2, :2], expected.detach(), rtol=1e-4, atol=1e-6)


def test_pixel_methods_need_map_size_without_features():
    with pytest.raises(ValueError, match="map_size"):
        get_method("occlusion")(QuadrantModel(16))


# ----- occlusion --------------------------------------------------------------------------------------


def test_occlusion_matches_captum_per_class(cnn):
    images = torch.randn(2, 1, 32, 32)
    result = get_method("occlusion")(cnn, positive=False).attribute(images)
    assert result.maps.shape == (2, NUM_FINDINGS, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(result.logits, cnn(images))
    occlusion = Occlusion(cnn)
    for target in (0, 13):  # defaults: window S//8 = 4, stride S//16 = 2
        ref = occlusion.attribute(images, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2), baselines=0.0,
                                  target=target)
        pooled = torch.nn.functional.adaptive_avg_pool2d(ref.sum(1), (2, 2))
        torch.testing.assert_close(result.maps[:, target], pooled, atol=1e-6, rtol=1e-4)
    positive = get_method("occlusion")(cnn).attribute(images)
    assert (positive.maps >= 0).all()


def test_occlusion_localises_and_supports_fusion(fusion):
    model = QuadrantModel(32)
    images = torch.rand(1, 1, 32, 32) + 0.5
    maps = get_method("occlusion")(model, window=8, stride=8, map_size=4).attribute(images).maps
    assert (maps[:, :, :2, :2] > 0).all()
    assert maps[:, :, 2:, :].abs().max() == 0 and maps[:, :, :, 2:].abs().max() == 0
    both = get_method("occlusion")(fusion, window=8, stride=8).attribute(torch.randn(2, 1, 32, 32), torch.randn(2, 5))
    assert both.maps.shape == (2, NUM_FINDINGS, 2, 2)


# ----- metadata ---------------------------------------------------------------------------------------


def test_metadata_ig_ignored_feature_gets_zero():
    torch.manual_seed(0)
    model = create_model("mlp", metadata_features=MetadataFeatures(("age", "sex")), hidden=8, depth=1).eval()
    ignored = model.metadata_features.names.index("sex_F")
    with torch.no_grad():
        model.stem.weight[:, ignored] = 0.0
    features = torch.randn(3, model.metadata_features.dim) + 1.0
    result = get_method("metadata_ig")(model, n_steps=64).attribute(features=features)
    attributions = result.feature_attributions
    assert attributions.shape == (3, NUM_FINDINGS, 5)
    assert result.feature_names == tuple(model.metadata_features.names)
    assert attributions[:, :, ignored].abs().max() < 1e-7
    others = [i for i in range(5) if i != ignored]
    assert attributions[:, :, others].abs().amax(dim=(0, 1)).min() > 1e-4
    # Completeness: attributions sum to logit(x) - logit(0).
    with torch.no_grad():
        delta = model(features) - model(torch.zeros_like(features))
    torch.testing.assert_close(result.logits, model(features).detach())
    torch.testing.assert_close(attributions.sum(-1), delta, atol=2e-2, rtol=2e-2)


def test_metadata_ig_on_fusion(fusion):
    images, features = torch.randn(2, 1, 32, 32), torch.randn(2, 5)
    result = get_method("metadata_ig")(fusion, n_steps=4, internal_batch_size=4).attribute(images, features)
    assert result.feature_attributions.shape == (2, NUM_FINDINGS, 5) and result.maps is None
    with torch.no_grad():
        torch.testing.assert_close(result.logits, fusion(images, features))


def test_methods_restore_training_mode():
    torch.manual_seed(0)
    model = create_model("small_cnn", drop_rate=0.5).train()
    images = torch.randn(2, 1, 32, 32)
    eval_logits = get_method("fast_cam")(model).attribute(images).logits
    for name, options in [("integrated_gradients", {"n_steps": 2}), ("occlusion", {"window": 16, "stride": 16})]:
        result = get_method(name)(model, **options).attribute(images)
        torch.testing.assert_close(result.logits, eval_logits)  # dropout off during attribution
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
