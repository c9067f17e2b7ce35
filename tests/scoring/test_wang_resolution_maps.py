"""Wang et al. 2017's localization input path: DenseNet-121 at 1024 px gives 32x32 raw CAMs, stored unpooled and
lossless (`--method cam --max-map-side 0 --heatmap-bits 8`), which the evaluation labels as at Wang's
resolution; the Scorer runs in-process (no Ray)."""
import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.helpers import make_checkpoint
from thorax_ray.attribution import decode_heatmaps, normalise_maps
from thorax_ray.attribution.cam import class_activation_maps
from thorax_ray.checkpoint import checkpoint_model_id
from thorax_ray.data.preprocess import normalise_images, preprocessing_contract
from thorax_ray.evaluation.protocols import localization_protocols, wang_resolution_gaps
from thorax_ray.scoring import ScoreConfig
from thorax_ray.scoring.scorer import Scorer, ScorerSettings, heatmap_description

WANG_SIZE = 1024


@pytest.mark.slow  # DenseNet-121 forwards at 1024 px on the CPU: ~20 s
def test_densenet_at_1024_px_stores_32x32_raw_cams_exactly(tmp_path):
    model = make_checkpoint(tmp_path / "ck", "densenet121", size=WANG_SIZE)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1, WANG_SIZE, WANG_SIZE), dtype=np.uint8)
    table = pa.table({"image_index": ["a.png"], "path": ["a.png"], "image": [pixels[0].tobytes()],
                      "width": [WANG_SIZE], "height": [WANG_SIZE], "ok": [True], "stage": [""], "reason": [""]})
    config = ScoreConfig(checkpoint="-", input="-", out="-", method="cam", max_map_side=None, heatmap_bits=8)
    checkpoint = str(tmp_path / "ck")
    scorer = Scorer(ScorerSettings.from_config(
        config, checkpoint_dir=checkpoint, model_id=checkpoint_model_id(checkpoint), method="cam",
        stored_size=WANG_SIZE, run_id="r", batch_date="2024-01-01", box_min_probability=None))
    scored = scorer(table)

    contract = preprocessing_contract(WANG_SIZE)
    description = heatmap_description(model, contract, "cam", None, heatmap_bits=8, tta_heatmaps=False)
    assert description["shape"] == [14, 32, 32] and description["feature_map"] == [32, 32]
    assert description["pooling"] == "none" and description["encoding"] == "planar8"
    assert wang_resolution_gaps(description) == []
    assert localization_protocols(description, None)["wang2017"]["label"].startswith(
        "Wang et al. 2017 protocol at Wang's resolution: raw CAM maps 32x32")

    stored = scored.column("heatmap").to_pylist()
    assert [len(value) for value in stored] == [1 + 14 * 32 * 32]  # before the Parquet's zstd
    with torch.no_grad():
        images = normalise_images(torch.from_numpy(pixels).unsqueeze(1), contract, device=torch.device("cpu"))
        _, raw = class_activation_maps(model, images, relu=False)
    expected = normalise_maps(raw)
    decoded = decode_heatmaps(stored, (32, 32))
    assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= 1  # every level kept (60 and 180 included)
