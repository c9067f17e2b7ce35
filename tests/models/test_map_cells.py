"""README "Map cells": the feature-map side of every architecture at every input side it lists, measured."""
import re
from pathlib import Path

import pytest
import torch

from thorax_ray.models import create_model

README = Path(__file__).resolve().parents[2] / "README.md"
ROWS = {  # README row start -> (architectures, create_model kwargs)
    "| densenet121, resnet50, resnet18, efficientnet_b0": (("densenet121", "resnet50", "resnet18", "efficientnet_b0"), {}),
    "| small_cnn, output stride 8 (default)": (("small_cnn",), {"output_stride": 8}),
    "| small_cnn, `--output-stride 16`": (("small_cnn",), {"output_stride": 16}),
}


def readme_table() -> tuple[list[int], dict[str, list[tuple[int, int]]]]:
    lines = README.read_text().split("**Map cells.**", 1)[1].splitlines()
    header = next(line for line in lines if line.startswith("| architecture"))
    sizes = [int(size) for size in re.findall(r"(\d+) px", header)]
    rows = {}
    for start in ROWS:
        line = next(line for line in lines if line.startswith(start))
        rows[start] = [(int(cells), int(px)) for cells, px in re.findall(r"(\d+)x\1 \((\d+) px\)", line)]
    return sizes, rows


@pytest.mark.parametrize("start", list(ROWS))
def test_readme_cell_sizes_are_what_the_models_give(start):
    sizes, rows = readme_table()
    assert sizes == [128, 224, 256, 512, 1024] and len(rows[start]) == len(sizes)
    architectures, kwargs = ROWS[start]
    for arch in architectures:
        model = create_model(arch, **kwargs).eval()
        for size, (cells, px) in zip(sizes, rows[start]):
            with torch.no_grad():
                fmap = model.features(torch.zeros(1, 1, size, size))
            assert tuple(fmap.shape[-2:]) == (cells, cells), (arch, size)
            assert px == round(1024 / cells), (arch, size)


def test_the_defaults_localize():
    """With no flags a cell covers at most 64 px of a 1024-px original: the torchvision CNNs at the default input
    side, the small CNN of the CPU profile (128 px) at its default stride."""
    from thorax_ray.data.sources import DataConfig
    from thorax_ray.train.config import TrainConfig
    from thorax_ray.train.loop import model_kwargs

    default = TrainConfig()
    assert default.data.size == DataConfig().size == 512 and default.model.name == "densenet121"
    assert 1024 / (default.data.size / 32) <= 64
    cpu = default.replace(model={"name": "small_cnn"}, data={"size": 128})
    model = create_model("small_cnn", **model_kwargs(cpu))
    assert 1024 / model.features(torch.zeros(1, 1, 128, 128)).shape[-1] <= 64
