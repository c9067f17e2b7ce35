"""Metadata feature encoder (fixed constants, explicit missing values) and the metadata MLP."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from thorax_ray.labels import NUM_FINDINGS
from thorax_ray.models import AVAILABLE_FEATURES, DEFAULT_FEATURES, MetadataFeatures, create_model
from thorax_ray.models.features import FOLLOW_UP_FEATURES
from thorax_ray.models.mlp import MetadataMLP

FU3 = (math.log1p(3) - 1.5) / 1.3
FU0 = (0.0 - 1.5) / 1.3


def _frame() -> pd.DataFrame:
    """Rows as the manifest stores them (nullable Int64 sizes, NaN ages, None categories)."""
    return pd.DataFrame({
        "age_years": [63.2, 30.0, np.nan, 46.6],
        "sex": ["M", "F", None, "X"],
        "view_position": ["PA", "AP", None, "other"],
        "follow_up": [0, 3, 1, 5],
        "original_width": pd.array([2500, 3000, None, 2048], dtype="Int64"),
        "original_height": pd.array([2048, 2000, None, 2500], dtype="Int64"),
        "pixel_spacing_x": [0.15, 0.139, np.nan, 0.168],
        "pixel_spacing_y": [0.15, 0.139, np.nan, 0.168],
    })


def test_default_features_leave_follow_up_out():
    """Follow-up # (a care-intensity proxy) is opt-in; the default is age, sex and view position."""
    assert MetadataFeatures().features == DEFAULT_FEATURES == ("age", "sex", "view_position")
    assert "follow_up" not in MetadataFeatures().names and MetadataFeatures().dim == 9
    assert create_model("mlp").metadata_features == MetadataFeatures()
    from thorax_ray.train.config import ModelConfig

    assert ModelConfig().metadata_features == DEFAULT_FEATURES


def test_features_with_follow_up_and_names():
    features = MetadataFeatures(FOLLOW_UP_FEATURES)
    assert features.features == FOLLOW_UP_FEATURES == ("age", "sex", "view_position", "follow_up")
    assert features.names == [
        "age", "age_missing", "sex_M", "sex_F", "sex_missing",
        "view_PA", "view_AP", "view_other", "view_missing", "follow_up", "follow_up_missing",
    ]
    assert features.dim == 11


def test_known_rows_encode_to_hand_computed_vectors():
    encoded = MetadataFeatures(FOLLOW_UP_FEATURES).encode(_frame())
    assert encoded.dtype == np.float32 and encoded.shape == (4, 11)
    expected = np.array([
        # age, miss, M, F, miss, PA, AP, other, miss, follow_up, miss
        [1.0, 0, 1, 0, 0, 1, 0, 0, 0, FU0, 0],              # (63.2 - 46.6) / 16.6 = 1
        [-1.0, 0, 0, 1, 0, 0, 1, 0, 0, FU3, 0],             # (30 - 46.6) / 16.6 = -1
        [0.0, 1, 0, 0, 1, 0, 0, 0, 1, (math.log1p(1) - 1.5) / 1.3, 0],
        [0.0, 0, 0, 0, 1, 0, 0, 1, 0, (math.log1p(5) - 1.5) / 1.3, 0],  # age at the mean; sex "X" -> missing
    ], dtype=np.float32)
    np.testing.assert_allclose(encoded, expected, atol=1e-6)


def test_missing_values_set_indicator_and_zero_value():
    frame = pd.DataFrame({
        "age_years": [None, -3.0, np.inf],
        "sex": [np.nan, "", pd.NA],
        "view_position": [np.nan, " ", "LL"],
        "follow_up": pd.array([None, -1, 2], dtype="Int64"),
    })
    encoded = MetadataFeatures(FOLLOW_UP_FEATURES).encode(frame)
    names = MetadataFeatures(FOLLOW_UP_FEATURES).names
    col = {n: encoded[:, i] for i, n in enumerate(names)}
    np.testing.assert_array_equal(col["age"], [0, 0, 0])
    np.testing.assert_array_equal(col["age_missing"], [1, 1, 1])
    np.testing.assert_array_equal(col["sex_missing"], [1, 1, 1])
    np.testing.assert_array_equal(col["sex_M"] + col["sex_F"], [0, 0, 0])
    np.testing.assert_array_equal(col["view_missing"], [1, 1, 0])
    np.testing.assert_array_equal(col["view_other"], [0, 0, 1])  # present but neither PA nor AP
    np.testing.assert_array_equal(col["follow_up_missing"], [1, 1, 0])
    np.testing.assert_allclose(col["follow_up"], [0, 0, (math.log1p(2) - 1.5) / 1.3], atol=1e-6)
    # each one-hot group has exactly one slot set
    assert np.all(encoded[:, 2:5].sum(1) == 1) and np.all(encoded[:, 5:9].sum(1) == 1)


def test_optional_size_and_spacing():
    features = MetadataFeatures(("age", "sex", "view_position", "follow_up", "original_size", "pixel_spacing"))
    assert features.dim == 11 + 4 + 4
    assert features.names[11:] == [
        "original_width", "original_width_missing", "original_height", "original_height_missing",
        "pixel_spacing_x", "pixel_spacing_x_missing", "pixel_spacing_y", "pixel_spacing_y_missing",
    ]
    encoded = features.encode(_frame())
    np.testing.assert_allclose(encoded[0, 11:], [2.5, 0, 2.048, 0, 1.0, 0, 1.0, 0], atol=1e-6)
    np.testing.assert_allclose(encoded[2, 11:], [0, 1, 0, 1, 0, 1, 0, 1])


def test_subsets_change_dim_and_order_is_canonical():
    assert MetadataFeatures(("age",)).dim == 2
    assert MetadataFeatures(("sex", "view_position")).dim == 7
    assert MetadataFeatures("pixel_spacing").features == ("pixel_spacing",)
    assert MetadataFeatures(("sex", "age")) == MetadataFeatures(("age", "sex"))
    encoded = MetadataFeatures(("sex", "age")).encode(_frame())
    np.testing.assert_allclose(encoded[0], [1, 0, 1, 0, 0])  # age columns first
    # only the needed columns are read
    assert MetadataFeatures(("age",)).encode(pd.DataFrame({"age_years": [46.6]})).tolist() == [[0.0, 0.0]]


def test_unknown_feature_and_missing_column():
    with pytest.raises(ValueError, match="unknown metadata feature.*bmi"):
        MetadataFeatures(("age", "bmi"))
    with pytest.raises(ValueError, match="at least one"):
        MetadataFeatures(())
    with pytest.raises(ValueError, match="lacks column.*view_position"):
        MetadataFeatures().encode(pd.DataFrame({"age_years": [1.0], "sex": ["M"], "follow_up": [0]}))


def test_to_dict_from_dict_round_trip():
    for chosen in (DEFAULT_FEATURES, AVAILABLE_FEATURES, ("follow_up",)):
        features = MetadataFeatures(chosen)
        data = json.loads(json.dumps(features.to_dict()))  # JSON-safe for checkpoints
        assert data["names"] == features.names
        assert MetadataFeatures.from_dict(data) == features
    with pytest.raises(ValueError, match="version"):
        MetadataFeatures.from_dict({"features": ["age"], "encoding_version": 99})


def test_encode_single_mapping_and_empty_frame():
    features = MetadataFeatures(FOLLOW_UP_FEATURES)
    row = {"age_years": 63.2, "sex": "M", "view_position": "PA", "follow_up": 0}
    np.testing.assert_allclose(features.encode(row), features.encode(_frame().iloc[:1]), atol=1e-6)
    assert features.encode(_frame().iloc[:0]).shape == (0, 11)


def test_mlp_model():
    features = MetadataFeatures(("age", "sex"))
    model = create_model("mlp", metadata_features=features, hidden=16, dropout=0.0)
    assert isinstance(model, MetadataMLP) and model.metadata_features == features
    x = torch.from_numpy(features.encode(_frame()))
    assert model.embed(x).shape == (4, 16)
    assert model(x).shape == (4, NUM_FINDINGS)
    assert model.classifier.in_features == 16 and model.classifier.out_features == NUM_FINDINGS
    assert model.stem.in_features == features.dim
    with pytest.raises(ValueError, match=r"expected metadata features \(N, 5\)"):
        model(torch.zeros(2, 11))
    default = create_model("mlp")
    assert default.metadata_features == MetadataFeatures() and default.hidden == 64
    assert [m.p for m in default.modules() if isinstance(m, torch.nn.Dropout)] == [0.1, 0.1]


def test_sex_and_view_normalised_case_whitespace_aliases_and_dtypes():
    expected = np.array([[1, 0, 0, 1, 0, 0, 0],   # "male" / "pa"
                         [0, 1, 0, 0, 1, 0, 0],   # " f " / "AP "
                         [0, 0, 1, 0, 0, 1, 0],   # unknown sex -> missing; unknown view -> other
                         [0, 0, 1, 0, 0, 0, 1]],  # missing
                        dtype=np.float32)
    features = MetadataFeatures(("sex", "view_position"))
    sex, view = ["male", " f ", "X", None], ["pa", "AP ", "LL", None]
    for dtype in (object, "string", "category"):
        frame = pd.DataFrame({"sex": pd.Series(sex, dtype=dtype), "view_position": pd.Series(view, dtype=dtype)})
        np.testing.assert_array_equal(features.encode(frame), expected)
