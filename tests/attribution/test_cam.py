"""fast_cam (one forward) equals Captum's per-class LayerGradCam; Captum leaves the model untouched."""
from __future__ import annotations

import pytest
import torch
from captum.attr import LayerGradCam

from thorax_ray.attribution import get_method
from thorax_ray.attribution.cam import class_activation_maps
from thorax_ray.labels import NUM_FINDINGS
from thorax_ray.models import MetadataFeatures, create_model

# 96 px gives 3x3 maps for the /32 networks, 6x6 for small_cnn (/16).
CASES = {
    "small_cnn": dict(name="small_cnn"),
    "resnet18": dict(name="resnet18"),
    "densenet121": dict(name="densenet121"),
    "fusion": dict(name="fusion", backbone="small_cnn", metadata_features=MetadataFeatures(("age", "sex"))),
}
SIZE = 96


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=list(CASES))
def model(request):
    torch.manual_seed(0)
    kwargs = dict(CASES[request.param])
    return create_model(kwargs.pop("name"), **kwargs).eval()


def _inputs(model, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 1, SIZE, SIZE, generator=gen).to(dtype)
    features = None
    if model.spec.uses_metadata:
        features = torch.randn(2, model.metadata_features.dim, generator=gen).to(dtype)
    return images, features


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(1e-300), torch.zeros_like(maps))


def _captum_gradcam(model, images, features, relu: bool = True) -> torch.Tensor:
    gradcam = LayerGradCam(model, model.target_layer)
    extra = (features,) if features is not None else None
    return torch.cat([
        gradcam.attribute(images, target=c, relu_attributions=relu, additional_forward_args=extra).detach()
        for c in range(NUM_FINDINGS)
    ], dim=1)


def _hook_dicts(module: torch.nn.Module) -> dict[str, dict]:
    return {name: value for name, value in vars(module).items()
            if "hook" in name and isinstance(value, dict)}


def _assert_no_hooks(model: torch.nn.Module) -> None:
    for name, module in model.named_modules():
        left = {k: v for k, v in _hook_dicts(module).items() if v}
        assert not left, f"hooks left on {name or type(module).__name__}: {left}"


@pytest.mark.parametrize("relu", [True, False])
def test_fast_cam_equals_captum_gradcam(model, relu):
    """float64 so that min-max normalisation of near-flat maps does not amplify float32 noise."""
    double = model.double()
    try:
        images, features = _inputs(double, torch.float64)
        fast = get_method("fast_cam")(double, relu=relu).attribute(images, features)
        reference = _captum_gradcam(double, images, features, relu=relu)
        raw = get_method("cam")(double).attribute(images, features)
    finally:
        model.float()
    assert (fast.maps < 0).any() != relu  # raw maps keep negative evidence
    assert fast.maps.shape == reference.shape == (2, NUM_FINDINGS, *reference.shape[-2:])
    assert reference.shape[-1] > 1  # a real spatial map
    assert (reference.amax(dim=(-2, -1)) > 0).any()
    torch.testing.assert_close(_minmax(fast.maps), _minmax(reference), atol=1e-4, rtol=0)
    # fast_cam's scaling is Grad-CAM's exactly (W / (h*w)), so the raw maps agree too.
    torch.testing.assert_close(fast.maps, reference, atol=1e-8, rtol=1e-6)
    if not relu:  # `cam` is the raw map: Captum's LayerGradCam without its ReLU
        torch.testing.assert_close(raw.maps, reference, atol=1e-8, rtol=1e-6)


def test_fast_cam_float32_and_logits_from_one_forward(model):
    images, features = _inputs(model)
    calls = []
    handle = model.target_layer.register_forward_hook(lambda *_: calls.append(1))
    try:
        result = get_method("fast_cam")(model).attribute(images, features)
    finally:
        handle.remove()
    assert len(calls) == 1  # one forward pass for maps AND logits
    assert not result.maps.requires_grad and not result.logits.requires_grad
    with torch.no_grad():
        expected = model(*model.spec.model_inputs(images, features))
    torch.testing.assert_close(result.logits, expected)
    reference = _captum_gradcam(model, images, features)
    scale = reference.abs().max()
    torch.testing.assert_close(result.maps, reference, atol=1e-5 * float(scale), rtol=1e-4)


def test_pre_relu_cam_sums_to_logit_minus_bias():
    torch.manual_seed(1)
    model = create_model("small_cnn").eval()
    images = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        fmap = model.features(images)
        raw = torch.einsum("kc,nchw->nkhw", model.classifier.weight, fmap) / (fmap.shape[2] * fmap.shape[3])
        logits, maps = class_activation_maps(model, images)
    torch.testing.assert_close(raw.sum(dim=(2, 3)) + model.classifier.bias, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maps, raw.clamp(min=0))


def test_gradcam_method_matches_fast_cam(model):
    images, features = _inputs(model)
    grad = get_method("gradcam")(model).attribute(images, features)
    fast = get_method("fast_cam")(model).attribute(images, features)
    torch.testing.assert_close(grad.logits, fast.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad.maps, fast.maps, atol=1e-5 * float(fast.maps.abs().max()), rtol=1e-4)


def test_captum_gradcam_on_densenet_leaves_no_hooks_or_grads():
    torch.manual_seed(0)
    model = create_model("densenet121").train()
    global_before = {name: dict(value) for name, value in vars(torch.nn.modules.module).items()
                     if name.startswith("_global") and "hook" in name and isinstance(value, dict)}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(2, 1, 64, 64)
    # Plain Captum on the raw model: no in-place autograd error (DenseNet's final ReLU is a module).
    model.eval()
    maps = _captum_gradcam(model, images, None)
    assert maps.shape == (2, NUM_FINDINGS, 2, 2) and torch.isfinite(maps).all()
    _assert_no_hooks(model)
    # Our wrapper: restores train mode, writes no .grad, changes no weight / buffer (eval-mode BN).
    model.train()
    get_method("gradcam")(model).attribute(images)
    get_method("fast_cam")(model).attribute(images)
    _assert_no_hooks(model)
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    global_after = {name: dict(value) for name, value in vars(torch.nn.modules.module).items()
                    if name.startswith("_global") and "hook" in name and isinstance(value, dict)}
    assert global_after.keys() == global_before.keys()
    assert all(global_after[k].keys() == global_before[k].keys() for k in global_after)


def test_gradcam_with_frozen_parameters():
    torch.manual_seed(0)
    model = create_model("small_cnn").eval().requires_grad_(False)
    images = torch.randn(1, 1, 32, 32)
    grad = get_method("gradcam")(model).attribute(images)
    fast = get_method("fast_cam")(model).attribute(images)
    torch.testing.assert_close(grad.maps, fast.maps, atol=1e-6, rtol=1e-4)
    assert not any(p.requires_grad for p in model.parameters())
