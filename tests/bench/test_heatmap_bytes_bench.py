"""bench/heatmap_bytes.py runs to its end at tiny size (no Ray, nothing trained) and closes with its figures: bytes
per image of each encoding and the ratios against raw uint8 measured in the same run."""
from __future__ import annotations

import sys

import pytest

from tests.bench.test_benches import closing_figures, run_bench

pytestmark = pytest.mark.slow  # a bench in a subprocess (about 10 s: torch and torchvision imports, a DenseNet)


def test_heatmap_bytes(tmp_path):
    out = run_bench(sys.executable, "bench/heatmap_bytes.py", "--demo-run", str(tmp_path / "no-demo"),
                    "--small-size", "64", "--small-images", "3", "--densenet-size", "64", "--densenet-images", "1",
                    "--threads", "1", timeout=120)
    figures = closing_figures(out)
    assert figures["bench"] == "heatmap_bytes" and figures["baseline"] == "uint8"
    assert figures["small_cnn"]["model"].startswith("untrained small_cnn")
    assert figures["small_cnn"]["map_shape"] == [14, 8, 8] and figures["densenet121"]["map_shape"] == [14, 2, 2]
    for model in ("small_cnn", "densenet121"):
        assert all(figures[model][f"{encoding}_bytes_per_image"] > 0 for encoding in ("uint8", "planar5", "planar8"))
