"""What a scoring run writes follows from what its attribution method produces, not from the model alone:
per-class maps (heatmap, boxes) for the map methods of image models, feature attributions for metadata_ig, of
the metadata MLP and of the fusion model (whose images it holds fixed). The Scorer runs in-process, no Ray."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.helpers import make_checkpoint
from tests.scoring.test_tta_scoring import _config, _pixels, _scorer, _table
from thorax_ray.attribution import get_method
from thorax_ray.data.preprocess import normalise_images, preprocessing_contract
from thorax_ray.labels import NUM_FINDINGS
from thorax_ray.scoring.scorer import uses_feature_attributions, uses_maps

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 32
ROWS = 4
METADATA = {"age_years": [35, 50, 62, 78], "sex": ["M", "F", "F", "M"],
            "view_position": ["PA", "AP", "PA", "AP"], "follow_up": [0, 3, 1, 9]}


def _batch(model) -> pa.Table:
    table = _table(_pixels(ROWS, SIZE))
    for column in model.metadata_features.columns if model.spec.uses_metadata else ():
        table = table.append_column(column, pa.array(METADATA[column]))
    return table.append_column("metadata_source", pa.array(["csv"] * ROWS))


@pytest.mark.parametrize("name, method, maps, attributions", [
    ("small_cnn", "fast_cam", True, False), ("fusion", "fast_cam", True, False),
    ("fusion", "metadata_ig", False, True), ("mlp", "metadata_ig", False, True)])
def test_the_columns_follow_what_the_method_produces(tmp_path, name, method, maps, attributions):
    checkpoint = str(tmp_path / name)
    model = make_checkpoint(checkpoint, name, size=SIZE)
    assert (uses_maps(model, method), uses_feature_attributions(method)) == (maps, attributions)
    scored = _scorer(checkpoint, _config(checkpoint), method=method, size=SIZE)(_batch(model))
    assert scored.num_rows == ROWS and all(scored.column("ok").to_pylist())
    assert ("heatmap" in scored.column_names, "boxes" in scored.column_names) == (maps, maps)
    assert ("feature_attributions" in scored.column_names) == attributions


def test_fusion_with_metadata_ig_stores_the_methods_attributions(tmp_path):
    """Before, a fusion checkpoint scored with --method metadata_ig failed on every batch: the scorer took the
    model's images for a sign of maps and read maps the method does not make."""
    checkpoint = str(tmp_path / "fusion")
    model = make_checkpoint(checkpoint, "fusion", size=SIZE)
    batch = _batch(model)
    scored = _scorer(checkpoint, _config(checkpoint), method="metadata_ig", size=SIZE)(batch)
    names = model.metadata_features.names
    stored = np.stack([np.frombuffer(v, dtype="<f4").reshape(NUM_FINDINGS, len(names))
                       for v in scored.column("feature_attributions").to_pylist()])
    pixels = torch.from_numpy(_pixels(ROWS, SIZE)).unsqueeze(1)
    images = normalise_images(pixels, preprocessing_contract(SIZE), device=torch.device("cpu"))
    features = torch.from_numpy(model.metadata_features.encode(batch.to_pandas()))
    expected = get_method("metadata_ig")(model.eval()).attribute(images, features).feature_attributions
    np.testing.assert_allclose(stored, expected.numpy(), rtol=1e-4, atol=1e-6)
