"""Image CNNs with one-channel input and a 14-way head, all behind one interface (`ImageCNN`).

Every CNN here satisfies, in eval mode,

    model(x) == model.pool_and_classify(model.features(x))
             == model.classifier(model.features(x).mean((2, 3)))

so a class activation map for every class at once is `einsum("kc,nchw->nkhw", W, fmap) + b`.

Map geometry: feature-map position i (along either axis) is centred on input pixel
`map_offset + map_stride * i` (pixel indices; pixel j spans [j, j + 1)). A chain of layers with kernel k,
stride s and padding p maps output position o to input position s·o + (k - 1)/2 - p, so stride-2 3x3
convolutions with padding 1 (small_cnn, ResNet, EfficientNet) give offset 0, i.e. half a cell before the
cell-centre convention ((i + 0.5)·stride), and DenseNet's 2x2 average-pooling transitions give 14 px.
`receptive_field_centres` turns this into fractions of the input side for upsampling.
`target_layer` is the submodule whose forward output IS `features(x)` (for Captum LayerGradCam),
and no in-place activation runs on or after it (all activation modules are set to
`inplace=False`; DenseNet's functional in-place ReLU is replaced by a non-inplace `nn.ReLU`).

Torchvision architectures are always built with `weights=None`; ImageNet-style weights are loaded
after (`pretrained=`, see `thorax_ray.models.pretrained`). Every model built here records how it was
initialised in `model.init`.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from thorax_ray.labels import NUM_FINDINGS
from thorax_ray.models.head import Float32Linear
from thorax_ray.models.pretrained import (IMAGENET, IMAGENET_ARCHS, PretrainedArg, adapt_input_conv, imagenet_weights,
                                          initialisation, load_backbone_state_dict, load_pretrained, pretrained_name,
                                          read_pretrained)
from thorax_ray.models.registry import register_model


def _adapted_conv(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    if conv.in_channels == in_chans:
        return conv
    if conv.groups != 1:
        raise ValueError("cannot adapt a grouped stem conv")
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(adapt_input_conv(in_chans, conv.weight))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _get(module: nn.Module, dotted: str) -> nn.Module:
    return module.get_submodule(dotted)


def _set(module: nn.Module, dotted: str, new: nn.Module) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, leaf, new)


def disable_inplace(module: nn.Module) -> nn.Module:
    """Sets `inplace=False` on every activation / dropout submodule (safe for backward hooks)."""
    for sub in module.modules():
        if getattr(sub, "inplace", False) is True:
            sub.inplace = False
    return module


# ----- pretrained weights ----------------------------------------------------------------------------

class ImageCNN(nn.Module):
    """`body` (images -> feature map), global average pooling, dropout, one linear layer.

    Attributes: `stem` (first conv), `target_layer` (module whose output is the feature map),
    `classifier` (final nn.Linear), `feature_dim` (channels of the feature map), `arch`, `map_stride` and
    `map_offset` (where feature-map positions sit in the input; module docstring).
    """

    def __init__(self, *, arch: str, body: nn.Module, target_layer: nn.Module, stem: nn.Conv2d,
                 feature_dim: int, num_classes: int = NUM_FINDINGS, drop_rate: float = 0.0,
                 map_stride: int = 32, map_offset: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.arch = arch
        self.body = body
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.map_stride, self.map_offset = int(map_stride), float(map_offset)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = Float32Linear(feature_dim, num_classes)
        # Plain attributes would register the modules twice under other names; keep names only.
        self._target_name = next(n for n, m in self.named_modules() if m is target_layer)
        self._stem_name = next(n for n, m in self.named_modules() if m is stem)
        disable_inplace(self)

    @property
    def target_layer(self) -> nn.Module:
        return self.get_submodule(self._target_name)

    @property
    def stem(self) -> nn.Conv2d:
        return self.get_submodule(self._stem_name)

    @property
    def in_chans(self) -> int:
        return self.stem.in_channels

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> feature map (N, feature_dim, h, w), after the final norm/activation."""
        return self.body(images)

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        """Global average pooling (N, C, h, w) -> (N, C), in float32 (the head's precision; see models/head.py)."""
        return fmap.float().mean(dim=(2, 3))

    def pool_and_classify(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(fmap)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool_and_classify(self.features(images))


# ----- torchvision architectures ---------------------------------------------------------------------


@dataclass(frozen=True)
class _TorchvisionArch:
    constructor: str  # name in torchvision.models, imported when a model is built (not when names are listed)
    stem_key: str
    classifier_key: str
    feature_dim: int
    default_drop_rate: float
    wrap: Callable[[nn.Module], tuple[nn.Module, nn.Module]]  # tv model -> (body, target_layer)
    map_offset: float = 0.0  # input pixel of feature position 0 (the stride is 32 for all of them)


def _wrap_densenet(tv: nn.Module) -> tuple[nn.Module, nn.Module]:
    # torchvision's forward does F.relu(features, inplace=True); do it as a non-inplace module.
    body = nn.Sequential(OrderedDict(features=tv.features, relu=nn.ReLU(inplace=False)))
    return body, body


def _wrap_resnet(tv: nn.Module) -> tuple[nn.Module, nn.Module]:
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    body = nn.Sequential(OrderedDict((n, getattr(tv, n)) for n in names))
    return body, body.layer4


def _wrap_efficientnet(tv: nn.Module) -> tuple[nn.Module, nn.Module]:
    body = nn.Sequential(OrderedDict(features=tv.features))
    return body, body.features[-1]  # Conv2dNormActivation(320 -> 1280, BN, SiLU)


_TORCHVISION: dict[str, _TorchvisionArch] = {
    # DenseNet: conv0 and pool0 keep centres (2·o); each 2x2 average-pooling transition adds half a cell of its
    # input grid, whose cells are 4, 8 and 16 input pixels: 0.5·(4 + 8 + 16) = 14.
    "densenet121": _TorchvisionArch("densenet121", "features.conv0", "classifier", 1024, 0.0,
                                    _wrap_densenet, map_offset=14.0),
    "resnet50": _TorchvisionArch("resnet50", "conv1", "fc", 2048, 0.0, _wrap_resnet),
    "resnet18": _TorchvisionArch("resnet18", "conv1", "fc", 512, 0.0, _wrap_resnet),
    "efficientnet_b0": _TorchvisionArch("efficientnet_b0", "features.0.0", "classifier.1", 1280,
                                        0.2, _wrap_efficientnet),
}
assert tuple(sorted(_TORCHVISION)) == IMAGENET_ARCHS, "pretrained.IMAGENET_ARCHS names the torchvision CNNs"


def build_torchvision_cnn(arch: str, *, pretrained: PretrainedArg = None, in_chans: int = 1,
                          num_classes: int = NUM_FINDINGS, drop_rate: float | None = None) -> ImageCNN:
    """A torchvision CNN (weights=None) with an `in_chans` stem, optional weights ("imagenet" or a
    path/URI), 14-way head."""
    import torchvision  # deferred: torchvision (slow import; listing registered names stays fast)

    spec = _TORCHVISION[arch]
    tv = getattr(torchvision.models, spec.constructor)(weights=None)
    _set(tv, spec.stem_key, _adapted_conv(_get(tv, spec.stem_key), in_chans))
    _set(tv, spec.classifier_key, nn.Linear(spec.feature_dim, num_classes))
    if pretrained is not None:
        load_pretrained(tv, arch, pretrained, stem_key=spec.stem_key, classifier_key=spec.classifier_key)
    stem = _get(tv, spec.stem_key)
    body, target = spec.wrap(tv)
    model = ImageCNN(arch=arch, body=body, target_layer=target, stem=stem, feature_dim=spec.feature_dim,
                     num_classes=num_classes, drop_rate=spec.default_drop_rate if drop_rate is None else drop_rate,
                     map_stride=32, map_offset=spec.map_offset)
    model.init = initialisation(arch, pretrained)
    return model


# ----- small CNN for CPU runs ------------------------------------------------------------------------


def _small_cnn_body(in_chans: int, widths: tuple[int, ...], strides: tuple[int, ...]) -> nn.Sequential:
    blocks = OrderedDict()
    width_in = in_chans
    for i, (width, stride) in enumerate(zip(widths, strides)):
        blocks[f"block{i + 1}"] = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(width_in, width, 3, stride=stride, padding=1, bias=False),
            bn=nn.BatchNorm2d(width),
            relu=nn.ReLU(inplace=False),
        ))
        width_in = width
    body = nn.Sequential(blocks)
    for module in body.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return body


def build_small_cnn(*, pretrained: PretrainedArg = None, in_chans: int = 1, num_classes: int = NUM_FINDINGS,
                    widths: tuple[int, ...] = (16, 32, 64, 128), drop_rate: float = 0.0,
                    output_stride: int | None = None) -> ImageCNN:
    """Conv3x3-BN-ReLU blocks (16 -> 32 -> 64 -> 128), GAP, linear: fast on 64-128 px on CPU.

    Every block has stride 2 (feature map = input / 2**len(widths)), unless `output_stride` (a power of
    two) asks for a finer map: the first log2(output_stride) blocks have stride 2, the rest stride 1
    (e.g. 8: 16x16 maps at 128 px instead of 8x8, for 2.4x the multiply-adds; a CPU training step at batch 32
    took 1.15x as long in one measurement).
    `pretrained`: a state_dict of an `ImageCNN` small_cnn with the same widths (its `classifier.*`
    is dropped, a 3-channel stem is summed).
    """
    widths = tuple(int(w) for w in widths)
    if not widths or min(widths) < 1:
        raise ValueError(f"widths must be positive, got {widths}")
    full = 2 ** len(widths)
    stride = full if output_stride is None else int(output_stride)
    if stride < 1 or stride > full or stride & (stride - 1):
        raise ValueError(f"output_stride must be a power of two from 1 to {full} for {len(widths)} blocks, "
                         f"got {output_stride}")
    halvings = stride.bit_length() - 1
    body = _small_cnn_body(in_chans, widths, tuple(2 if i < halvings else 1 for i in range(len(widths))))
    model = ImageCNN(arch="small_cnn", body=body, target_layer=body[-1], stem=body[0].conv,
                     feature_dim=widths[-1], num_classes=num_classes, drop_rate=drop_rate,
                     map_stride=stride, map_offset=0.0)
    if pretrained is not None:
        if str(pretrained_name(pretrained)).lower() == IMAGENET:
            imagenet_weights("small_cnn")  # raises: there are none
        weights = read_pretrained("small_cnn", pretrained)
        load_backbone_state_dict(model, weights.state, stem_key="body.block1.conv", classifier_key="classifier",
                                 source=weights.source)
    model.init = initialisation("small_cnn", pretrained)
    return model


IMAGE_CNNS: tuple[str, ...] = ("densenet121", "resnet50", "resnet18", "efficientnet_b0", "small_cnn")


def receptive_field_centres(model: nn.Module, cells: int, size: int) -> list[float]:
    """Where `cells` feature-map positions of `model` (an ImageCNN, or fusion through its backbone) sit
    along one axis of a `size`-pixel input, as fractions of the side: (offset + stride·i + 0.5) / size."""
    cnn = getattr(model, "backbone", model)
    stride, offset = cnn.map_stride, cnn.map_offset
    return [(offset + stride * i + 0.5) / size for i in range(int(cells))]


def build_cnn(arch: str, *, pretrained: PretrainedArg = None, **kwargs) -> ImageCNN:
    """Any image CNN of this module by name (the fusion model uses this for its backbone)."""
    if arch == "small_cnn":
        return build_small_cnn(pretrained=pretrained, **kwargs)
    if arch not in _TORCHVISION:
        raise ValueError(f"unknown CNN backbone {arch!r}; known: {', '.join(IMAGE_CNNS)}")
    return build_torchvision_cnn(arch, pretrained=pretrained, **kwargs)


def _register(arch: str) -> None:
    @register_model(arch, input_kind="image")
    def builder(*, metadata_features=None, pretrained: str | None = None, **kwargs) -> ImageCNN:
        return build_cnn(arch, pretrained=pretrained, **kwargs)

    builder.__name__ = builder.__qualname__ = arch
    builder.__doc__ = f"{arch}: `model(images)` with images (N, 1, H, W) -> logits (N, 14)."


for _arch in IMAGE_CNNS:
    _register(_arch)
