"""Where a CNN's feature-map positions sit in the input (map_stride / map_offset): checked with models whose
response to a single bright pixel is known, and by the centroid of each position's input gradient."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from thorax_ray.attribution import get_method, upsample_maps
from thorax_ray.attribution.geometry import bin_centres
from thorax_ray.models import create_model, receptive_field_centres

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _centre_taps(model: nn.Module) -> nn.Module:
    """A copy whose convolutions only pass their centre tap (positive), with identity batch norms, average
    instead of max pooling (same window) and no squeeze-excitation: each layer moves a pixel to where its
    geometry says, symmetrically, and every activation stays positive."""
    from torchvision.ops.misc import SqueezeExcitation

    model = copy.deepcopy(model).eval()
    for name, module in list(model.named_modules()):
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        leaf = name.rpartition(".")[2]
        if isinstance(module, nn.MaxPool2d):
            setattr(parent, leaf, nn.AvgPool2d(module.kernel_size, module.stride, module.padding))
        elif isinstance(module, SqueezeExcitation):
            setattr(parent, leaf, nn.Identity())
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                module.weight.zero_()
                module.weight[:, :, kh // 2, kw // 2] = 1.0 / (module.in_channels // module.groups)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.running_mean.zero_(), module.running_var.fill_(1.0), module.weight.fill_(1.0)
                module.bias.zero_()
            elif isinstance(module, nn.Linear):
                module.weight.fill_(1.0), module.bias.zero_()
    return model


@pytest.mark.parametrize("output_stride, size", [(None, 128), (8, 128)])
def test_single_bright_pixel_lands_in_its_cell_and_back_on_itself(output_stride, size):
    """small_cnn with centre taps: a pixel at (stride·i, stride·j) reaches feature position (i, j) only. The
    map upsampled with the model's centres peaks on that pixel; the equal-cell convention misses it by
    half a cell less half a pixel (7.5 px at stride 16), which is what these centres fix."""
    model = _centre_taps(create_model("small_cnn", output_stride=output_stride))
    stride = model.map_stride
    cells = size // stride
    assert (stride, cells) == ((16, 8) if output_stride is None else (8, 16))
    i, j = 3, 5
    image = torch.zeros(1, 1, size, size)
    image[0, 0, stride * i, stride * j] = 1.0
    maps = get_method("cam")(model).attribute(image).maps[0, 0].numpy()
    assert maps.shape == (cells, cells) and np.count_nonzero(maps) == 1 and maps[i, j] > 0
    centres = receptive_field_centres(model, cells, size)
    up = upsample_maps(maps[None], size, size, (centres, centres))[0]
    assert np.unravel_index(np.argmax(up), up.shape) == (stride * i, stride * j)
    naive = upsample_maps(maps[None], size, size)[0]  # cell values at (i + 0.5)·stride
    peak = np.unravel_index(np.argmax(naive), naive.shape)
    assert abs(peak[0] - stride * i) >= stride // 2 - 1 and abs(peak[1] - stride * j) >= stride // 2 - 1
    assert bin_centres(cells) != centres


@pytest.mark.parametrize("arch, size, cell", [("small_cnn", 128, 4), ("resnet18", 224, 3),
                                              ("densenet121", 224, 3), ("efficientnet_b0", 224, 3)])
def test_declared_offsets_match_the_input_gradient_centroid(arch, size, cell):
    """The centroid of d(feature position)/d(input) of a centre-tap copy is exactly where the position's
    receptive field is centred: offset + stride·i (DenseNet's 2x2 average-pooling transitions: 14 px)."""
    model = _centre_taps(create_model(arch))
    image = torch.ones(1, 1, size, size, requires_grad=True)
    fmap = model.features(image)
    fmap[0, :, cell, cell].sum().backward()
    weight = image.grad[0, 0].abs().numpy().astype(np.float64)
    rows, cols = np.indices(weight.shape)
    centroid = (float((weight * rows).sum() / weight.sum()), float((weight * cols).sum() / weight.sum()))
    expected = model.map_offset + model.map_stride * cell
    assert centroid == pytest.approx((expected, expected), abs=1e-3)
    assert (model.map_stride, model.map_offset) == {"small_cnn": (16, 0.0), "resnet18": (32, 0.0),
                                                    "densenet121": (32, 14.0), "efficientnet_b0": (32, 0.0)}[arch]
