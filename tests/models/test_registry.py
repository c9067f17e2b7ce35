"""Registry-generated checks of every model (timm-style), CNN interface, stem adaptation and
pretrained loading. Tiny inputs (64 px, batch 2) keep this fast on CPU."""
from __future__ import annotations

import functools
import pickle

import pytest
import torch
import torchvision
from torch import nn

from thorax_ray.labels import NUM_FINDINGS
from thorax_ray.models import create_model, get_model_spec, list_models, registry
from thorax_ray.models.cnn import IMAGE_CNNS, ImageCNN
from thorax_ray.models.pretrained import PretrainedWeightsError, adapt_input_conv
from thorax_ray.models.registry import ModelSpec, create_model_from_config, forward_model, register_model

EXPECTED = {"densenet121", "resnet50", "resnet18", "efficientnet_b0", "small_cnn", "mlp", "fusion"}
SIZE = 32  # the smallest input every CNN takes (1x1 feature map for the /32 networks)
CAM_SIZE = 64  # where a spatial feature map matters
TORCHVISION_ARCHES = {
    # arch: (constructor, stem key, classifier key)
    "densenet121": (torchvision.models.densenet121, "features.conv0", "classifier"),
    "resnet18": (torchvision.models.resnet18, "conv1", "fc"),
    "resnet50": (torchvision.models.resnet50, "conv1", "fc"),
    "efficientnet_b0": (torchvision.models.efficientnet_b0, "features.0.0", "classifier.1"),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@functools.lru_cache(maxsize=None)
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    # fusion's default densenet121 backbone is covered by the densenet121 checks; keep this fast
    return create_model(name, **({"backbone": "small_cnn"} if name == "fusion" else {}))


def _inputs(model: nn.Module, n: int = 2, seed: int = 0, size: int = SIZE):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, size, size, generator=gen) if model.spec.uses_images else None
    features = (torch.randn(n, model.metadata_features.dim, generator=gen)
                if model.spec.uses_metadata else None)
    return images, features


def _stems(model: nn.Module) -> list[nn.Module]:
    if model.spec.input_kind == "both":
        return [model.backbone.stem, model.metadata_net.stem]
    return [model.stem]


def test_registry_names_exact():
    assert set(list_models()) == EXPECTED
    assert list_models() == sorted(EXPECTED)
    assert set(list_models("image")) == set(IMAGE_CNNS)
    assert list_models("metadata") == ["mlp"] and list_models("both") == ["fusion"]


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError, match="unknown model 'vit'.*densenet121.*small_cnn"):
        create_model("vit")
    with pytest.raises(ValueError, match="known models"):
        get_model_spec("nope")


def test_register_model_decorator_and_duplicates():
    @register_model("tiny_test_model", input_kind="metadata")
    def tiny(*, metadata_features=None, pretrained=None):
        return nn.Linear(metadata_features.dim, NUM_FINDINGS)

    try:
        model = create_model("tiny_test_model")
        assert model.spec == ModelSpec("tiny_test_model", "metadata")
        assert model(torch.zeros(3, model.metadata_features.dim)).shape == (3, NUM_FINDINGS)
        with pytest.raises(ValueError, match="already registered"):
            register_model("tiny_test_model")(lambda **kw: None)
    finally:
        registry._REGISTRY.pop("tiny_test_model", None)
    with pytest.raises(ValueError, match="input_kind"):
        register_model("x", input_kind="audio")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_spec_and_calling_convention(name):
    model = _model(name)
    spec = model.spec
    assert spec == get_model_spec(name) and spec.name == name
    kind = {"mlp": "metadata", "fusion": "both"}.get(name, "image")
    assert spec.input_kind == kind
    assert spec.uses_images == (kind != "metadata")
    assert spec.uses_metadata == (kind != "image")
    assert (model.metadata_features is None) == (not spec.uses_metadata)
    images, features = _inputs(model)
    assert len(spec.model_inputs(images, features)) == (2 if kind == "both" else 1)
    if spec.uses_images:
        with pytest.raises(ValueError, match="needs images"):
            forward_model(model, None, features)
    if spec.uses_metadata:
        with pytest.raises(ValueError, match="needs metadata"):
            forward_model(model, images, None)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_forward_backward(name):
    model = _model(name)
    model.train()
    images, features = _inputs(model)
    model.zero_grad()
    logits = forward_model(model, images, features)
    assert logits.shape == (2, NUM_FINDINGS)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    for stem in _stems(model):
        assert stem.weight.grad is not None
        assert torch.isfinite(stem.weight.grad).all()
        assert stem.weight.grad.abs().sum() > 0
    if model.spec.uses_images:
        assert model.stem.in_channels == 1 if name != "fusion" else model.backbone.stem.in_channels == 1
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    model.zero_grad()
    model.eval()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_channels_last(name):
    model = _model(name).eval()
    images, features = _inputs(model)
    with torch.no_grad():
        expected = forward_model(model, images, features)
        model.to(memory_format=torch.channels_last)
        try:
            if images is not None:
                images = images.contiguous(memory_format=torch.channels_last)
            got = forward_model(model, images, features)
        finally:
            model.to(memory_format=torch.contiguous_format)
    assert got.shape == (2, NUM_FINDINGS)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", IMAGE_CNNS)
def test_cnn_interface(name):
    model = _model(name).eval()
    assert isinstance(model, ImageCNN)
    images, _ = _inputs(model, size=CAM_SIZE)
    captured = {}
    handle = model.target_layer.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    try:
        with torch.no_grad():
            fmap = model.features(images)
            logits = model(images)
    finally:
        handle.remove()
    assert fmap.ndim == 4 and fmap.shape[:2] == (2, model.feature_dim)
    torch.testing.assert_close(captured["out"], fmap)  # target_layer's output is the feature map
    torch.testing.assert_close(model.pool_and_classify(fmap), logits, atol=1e-5, rtol=1e-5)
    assert isinstance(model.classifier, nn.Linear)
    assert (model.classifier.in_features, model.classifier.out_features) == (model.feature_dim, NUM_FINDINGS)
    # The fast-CAM identity: logits = W · mean_hw(fmap) + b.
    manual = fmap.mean(dim=(2, 3)) @ model.classifier.weight.T + model.classifier.bias
    torch.testing.assert_close(manual, logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError):
        model(torch.zeros(1, 3, SIZE, SIZE))  # one channel only


@pytest.mark.parametrize("name", IMAGE_CNNS)
def test_no_inplace_activation_and_backward_hook(name):
    model = _model(name).eval()
    inplace = [n for n, m in model.named_modules() if getattr(m, "inplace", False)]
    assert not inplace, f"in-place modules: {inplace}"
    grads = {}

    def hook(module, grad_input, grad_output):
        grads["out"] = grad_output[0]

    handle = model.target_layer.register_full_backward_hook(hook)
    try:
        images, _ = _inputs(model)
        images.requires_grad_(True)
        model(images)[:, 2].sum().backward()
    finally:
        handle.remove()
        model.zero_grad()
    assert grads["out"].shape[1] == model.feature_dim
    assert torch.isfinite(grads["out"]).all()


def test_densenet_target_path_and_layer_gradcam():
    from captum.attr import LayerGradCam

    model = _model("densenet121").eval()
    target = model.target_layer
    assert isinstance(target, nn.Sequential) and isinstance(target[-1], nn.ReLU)
    assert not target[-1].inplace
    relus = [m for m in target.modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)
    images, _ = _inputs(model, size=CAM_SIZE)
    attribution = LayerGradCam(model, target).attribute(images, target=1)
    assert attribution.shape == (2, 1, CAM_SIZE // 32, CAM_SIZE // 32)
    assert torch.isfinite(attribution).all()


def test_small_cnn_shape_and_kwargs():
    model = create_model("small_cnn", widths=(8, 16, 24, 32), drop_rate=0.2)
    assert model.feature_dim == 32
    fmap = model.features(torch.zeros(2, 1, 128, 128))
    assert fmap.shape == (2, 32, 8, 8)
    assert sum(p.numel() for p in _model("small_cnn").parameters()) < 150_000


def test_adapt_input_conv_sums_rgb():
    weight = torch.randn(4, 3, 3, 3)
    torch.testing.assert_close(adapt_input_conv(1, weight), weight.sum(dim=1, keepdim=True))
    assert adapt_input_conv(3, weight) is weight
    assert adapt_input_conv(4, weight).shape == (4, 4, 3, 3)


def _save_torchvision_state(arch: str, path) -> dict:
    constructor = TORCHVISION_ARCHES[arch][0]
    torch.manual_seed(1)
    source = constructor(weights=None).state_dict()
    torch.save(source, path)
    return source


@pytest.mark.parametrize("arch", ["densenet121", "resnet18", "efficientnet_b0"])
def test_pretrained_loading_adapts_stem(arch, tmp_path):
    path = tmp_path / f"{arch}.pth"
    source = _save_torchvision_state(arch, path)
    _, stem_key, classifier_key = TORCHVISION_ARCHES[arch]
    model = create_model(arch, pretrained=str(path))
    assert model.stem.weight.shape[1] == 1
    torch.testing.assert_close(model.stem.weight, source[stem_key + ".weight"].sum(dim=1, keepdim=True))
    # every non-head tensor of the file is in the model (names differ: body.<torchvision name>)
    loaded = {k.removeprefix("body."): v for k, v in model.state_dict().items()}
    for key, value in source.items():
        if key.startswith(classifier_key + ".") or key == stem_key + ".weight":
            continue
        assert key in loaded, key
        torch.testing.assert_close(loaded[key], value)
    assert model.classifier.out_features == NUM_FINDINGS
    assert torch.isfinite(model(torch.randn(2, 1, SIZE, SIZE))).all()


def test_pretrained_uri_and_fusion_backbone(tmp_path):
    path = tmp_path / "r18.pth"
    source = _save_torchvision_state("resnet18", path)
    model = create_model("resnet18", pretrained=f"file://{path}")
    torch.testing.assert_close(model.body.layer1[0].conv1.weight, source["layer1.0.conv1.weight"])
    fusion = create_model("fusion", backbone="resnet18", pretrained=str(path))
    torch.testing.assert_close(fusion.backbone.stem.weight, source["conv1.weight"].sum(1, keepdim=True))


def test_pretrained_small_cnn_round_trip(tmp_path):
    source = create_model("small_cnn")
    path = tmp_path / "small.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    model = create_model("small_cnn", pretrained=str(path))
    for key, value in source.state_dict().items():
        if not key.startswith("classifier."):
            torch.testing.assert_close(model.state_dict()[key], value)


def test_pretrained_errors(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="cannot read pretrained weights .*garbage.pth"):
        create_model("resnet18", pretrained=str(garbage))
    with pytest.raises(FileNotFoundError, match="pretrained weights not found"):
        create_model("resnet18", pretrained=str(tmp_path / "absent.pth"))
    # weights_only=True refuses arbitrary pickled objects
    pickled = tmp_path / "pickled.pth"
    with open(pickled, "wb") as handle:
        pickle.dump({"weights": functools.partial(print, "x")}, handle, protocol=2)
    with pytest.raises(PretrainedWeightsError, match="weights_only=True"):
        create_model("resnet18", pretrained=str(pickled))
    # a state dict of another architecture: every problem key is listed
    other = tmp_path / "r18.pth"
    _save_torchvision_state("resnet18", other)
    with pytest.raises(PretrainedWeightsError, match="missing keys .*layer1.0.conv3.weight.*shape mismatches"):
        create_model("resnet50", pretrained=str(other))
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["extra.weight"] = torch.zeros(1)
    extra = tmp_path / "extra.pth"
    torch.save(state, extra)
    with pytest.raises(PretrainedWeightsError, match=r"unexpected keys \[extra.weight\]"):
        create_model("resnet18", pretrained=str(extra))
    with pytest.raises(ValueError, match="pretrained"):
        create_model("mlp", pretrained=str(other))


def test_create_model_from_config_round_trip():
    model = create_model("fusion", backbone="small_cnn", hidden=16)
    rebuilt = create_model_from_config(model.build_config)
    assert rebuilt.spec == model.spec and rebuilt.metadata_features == model.metadata_features
    rebuilt.load_state_dict(model.state_dict())  # same architecture, strict


def _legacy_densenet_keys(state: dict) -> dict:
    """torchvision's published densenet121 file spells `denselayerN.norm1` as `denselayerN.norm.1`."""
    import re

    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))((?:[12])\.(?:weight|bias|running_mean|running_var))$")
    return {(m.group(1) + "." + m.group(2) if (m := pattern.match(k)) else k): v for k, v in state.items()}


@pytest.fixture
def offline_torch_hub(tmp_path, monkeypatch):
    """A temporary TORCH_HOME; any download attempt fails as it would without internet."""
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_internet(url, *args, **kwargs):
        raise urllib.error.URLError(f"no network in tests ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_internet)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_imagenet_weights_come_from_torchvisions_cache_file(offline_torch_hub):
    """`pretrained="imagenet"` reads torchvision's own weights file (its exact name, in the torch hub cache
    of TORCH_HOME), sums the RGB stem and records the initialisation; nothing is downloaded."""
    from thorax_ray.models.pretrained import imagenet_cache_path

    torch.manual_seed(3)
    source = torchvision.models.densenet121(weights=None).state_dict()
    path = imagenet_cache_path("densenet121")
    assert path == str(offline_torch_hub / "densenet121-a639ec97.pth")  # the name torchvision expects
    offline_torch_hub.mkdir(parents=True)
    torch.save(_legacy_densenet_keys(source), path)
    model = create_model("densenet121", pretrained="imagenet")
    torch.testing.assert_close(model.stem.weight, source["features.conv0.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.body.features.denseblock1.denselayer1.norm1.weight,
                               source["features.denseblock1.denselayer1.norm1.weight"])
    assert model.build_config["init"] == {"kind": "imagenet", "label": "ImageNet init",
                                          "source": "torchvision DenseNet121_Weights.IMAGENET1K_V1"}
    fusion = create_model("fusion", backbone="densenet121", pretrained="imagenet")
    torch.testing.assert_close(fusion.backbone.stem.weight, model.stem.weight)
    assert fusion.build_config["init"]["label"] == "densenet121 ImageNet init"
    # rebuilding from a checkpoint's build_config keeps saying how the trained weights started
    assert create_model_from_config(model.build_config).build_config["init"]["kind"] == "imagenet"
    assert create_model("densenet121").build_config["init"]["label"] == "random init"


def test_imagenet_weights_missing_offline_is_one_clear_error(offline_torch_hub):
    from thorax_ray.models import model_initialisation

    with pytest.raises(PretrainedWeightsError, match=r"ImageNet weights .*resnet18.*resnet18-f37072fd\.pth.*copy"):
        create_model("resnet18", pretrained="imagenet")
    with pytest.raises(ValueError, match="no ImageNet weights for 'small_cnn'"):
        create_model("small_cnn", pretrained="imagenet")
    assert model_initialisation("resnet18", "imagenet")["kind"] == "imagenet"  # described without any read
    assert model_initialisation("mlp")["label"] == "random init"
    assert model_initialisation("fusion", "/w/r18.pth", backbone="resnet18")["label"] == "resnet18 init from r18.pth"
