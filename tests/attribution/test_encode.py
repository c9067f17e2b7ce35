"""uint8 heatmap normalisation, bytes encoding, schema metadata and the per-image size budget."""
from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from thorax_ray.attribution import (
    BOXES_TYPE,
    HEATMAP_METADATA_KEY,
    HEATMAP_SCHEMA_METADATA,
    decode_heatmaps,
    encode_heatmaps,
    get_method,
    normalise_maps,
)
from thorax_ray.labels import FINDING_COLUMNS, FINDINGS, NUM_FINDINGS
from thorax_ray.models import create_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_normalise_per_image_and_class():
    maps = torch.zeros(2, NUM_FINDINGS, 3, 3)
    maps[0, 0] = torch.arange(9.0).reshape(3, 3) + 5.0  # min 5 -> 0, max 13 -> 255
    maps[1, 0] = torch.arange(9.0).reshape(3, 3) * 100.0
    maps[0, 1] = 7.0  # constant -> 0
    maps[0, 2, 1, 1] = float("nan")
    maps[0, 2, 0, 0] = 2.0
    out = normalise_maps(maps)
    assert out.dtype == np.uint8 and out.shape == (2, NUM_FINDINGS, 3, 3)
    np.testing.assert_array_equal(out[0, 0], np.rint(np.arange(9).reshape(3, 3) / 8 * 255).astype(np.uint8))
    np.testing.assert_array_equal(out[0, 0], out[1, 0])  # independent of scale and offset
    assert out[0, 1].max() == 0 and out[0, 3:].max() == 0 and out[1, 1:].max() == 0  # zero / constant maps
    assert out[0, 2, 0, 0] == 255 and out[0, 2, 1, 1] == 0
    np.testing.assert_array_equal(normalise_maps(maps.numpy()), out)


def test_encode_decode_roundtrip_and_errors():
    rng = np.random.default_rng(0)
    maps = rng.integers(0, 256, size=(3, NUM_FINDINGS, 7, 7), dtype=np.uint8)
    values = encode_heatmaps(maps, encoding="uint8")  # the layout of older outputs, still read
    assert [len(v) for v in values] == [NUM_FINDINGS * 49] * 3
    assert values[1] == maps[1].tobytes(order="C")
    np.testing.assert_array_equal(decode_heatmaps(values, (7, 7)), maps)
    np.testing.assert_array_equal(decode_heatmaps(pa.array(values, pa.binary()), (NUM_FINDINGS, 7, 7)), maps)
    assert decode_heatmaps([], (7, 7)).shape == (0, NUM_FINDINGS, 7, 7)
    with pytest.raises(TypeError, match="uint8"):
        encode_heatmaps(maps.astype(np.float32))
    with pytest.raises(ValueError, match="expected 686"):
        decode_heatmaps([values[0][:-1]], (7, 7))


def test_planar5_is_the_default_and_decodes_within_half_a_level():
    """32 levels stored as planar-predictor residuals: smooth maps compress (16x16 maps fit 2 KB/image)."""
    rng = np.random.default_rng(1)
    maps = rng.integers(0, 256, size=(4, NUM_FINDINGS, 16, 16), dtype=np.uint8)
    maps[0, 0] = np.arange(256).reshape(16, 16)  # every value once
    values = encode_heatmaps(maps)
    assert [len(v) for v in values] == [1 + NUM_FINDINGS * 256] * 4 and values[0][0] == 5
    back = decode_heatmaps(values, (16, 16))
    assert back.dtype == np.uint8 and np.abs(back.astype(int) - maps).max() <= 5  # half of 255 / 31, rounded
    assert len(np.unique(back)) == 32
    six = decode_heatmaps(encode_heatmaps(maps, encoding="planar6"), (16, 16))
    assert np.abs(six.astype(int) - maps).max() <= 3
    assert back.min() == 0 and back.max() == 255
    # both encodings in one column (an output written by an older and a newer run) decode together
    mixed = decode_heatmaps([values[0], encode_heatmaps(maps[1:2], encoding="uint8")[0]], (16, 16))
    np.testing.assert_array_equal(mixed[1], maps[1])
    # a smooth map (a blob) has small residuals: far fewer distinct bytes than raw values
    yy, xx = np.mgrid[0:16, 0:16]
    blob = np.rint(255 * np.exp(-((yy - 6) ** 2 + (xx - 9) ** 2) / 18)).astype(np.uint8)
    smooth = np.broadcast_to(blob, (1, NUM_FINDINGS, 16, 16)).copy()
    residuals = np.frombuffer(encode_heatmaps(smooth)[0], dtype=np.uint8, offset=1)
    assert len(set(residuals.tolist())) < len(set(blob.ravel().tolist())) / 3
    with pytest.raises(ValueError, match="unknown heatmap encoding"):
        encode_heatmaps(maps, encoding="png")


def test_schema_metadata():
    meta = HEATMAP_SCHEMA_METADATA(7, 7, "fast_cam")
    assert meta["shape"] == [NUM_FINDINGS, 7, 7] and meta["dtype"] == "uint8"
    assert meta["classes"] == list(FINDINGS) and meta["method"] == "fast_cam"
    assert "min-max" in meta["normalisation"] and "i*S/7" in meta["alignment"]
    assert json.loads(json.dumps(meta)) == meta  # stored as JSON in the Parquet metadata: plain types only


def test_planar8_is_lossless():
    rng = np.random.default_rng(2)
    maps = rng.integers(0, 256, size=(5, NUM_FINDINGS, 32, 32), dtype=np.uint8)
    values = encode_heatmaps(maps, encoding="planar8")
    assert [len(v) for v in values] == [1 + NUM_FINDINGS * 32 * 32] * 5 and values[0][0] == 8
    np.testing.assert_array_equal(decode_heatmaps(values, (32, 32)), maps)
    wang = np.zeros((1, NUM_FINDINGS, 2, 2), np.uint8) + np.array([[60, 180], [0, 255]], np.uint8)
    np.testing.assert_array_equal(decode_heatmaps(encode_heatmaps(wang, encoding="planar8"), (2, 2)), wang)
    five = decode_heatmaps(encode_heatmaps(wang, encoding="planar5"), (2, 2))
    assert five[0, 0].tolist() == [[58, 181], [0, 255]]  # 32 levels move Wang et al.'s 60 and 180


@pytest.mark.parametrize("encoding, levels, layout", [
    ("planar5", 32, "byte 5, then the maps quantised to 32 levels as planar-predictor residuals"),
    ("planar8", "lossless", "byte 8, then the maps all 256 levels (lossless) as planar-predictor residuals"),
    ("planar3", 8, "byte 3, then the maps quantised to 8 levels"),
    ("uint8", "lossless", "one binary value of 14*h*w bytes per image: the uint8 maps as they are"),
])
def test_schema_metadata_says_the_encoding_and_its_levels(encoding, levels, layout):
    meta = HEATMAP_SCHEMA_METADATA(8, 8, "cam", encoding=encoding)
    assert (meta["encoding"], meta["levels"]) == (encoding, levels) and layout in meta["layout"]
    assert HEATMAP_SCHEMA_METADATA(8, 8, "cam")["encoding"] == "planar5"  # what the scoring job writes by default
    with pytest.raises(ValueError, match="unknown heatmap encoding 'planar9'"):
        HEATMAP_SCHEMA_METADATA(8, 8, "cam", encoding="planar9")


@pytest.mark.parametrize("name,size,cells", [("densenet121", 224, 7), ("small_cnn", 128, 8)])
def test_bytes_per_image_from_real_maps(name, size, cells):
    torch.manual_seed(0)
    model = create_model(name).eval()
    maps = get_method("fast_cam")(model).attribute(torch.randn(1, 1, size, size)).maps
    assert maps.shape == (1, NUM_FINDINGS, cells, cells)
    stored = normalise_maps(maps)
    (value,) = encode_heatmaps(stored)
    assert len(value) <= 1024  # 1 + 686 bytes (7x7) / 1 + 896 bytes (8x8): within the per-image budget
    assert np.abs(decode_heatmaps([value], (cells, cells)).astype(int) - stored).max() <= 5


def test_parquet_row_fits_two_kilobytes():
    """Worst case stored per image: incompressible 8x8 maps, 14 probabilities, 2 boxes x 8 findings."""
    rng = np.random.default_rng(0)
    n = 64
    maps = rng.integers(0, 256, size=(n, NUM_FINDINGS, 8, 8), dtype=np.uint8)
    boxes = [[{"finding": FINDINGS[i % 8], "x": float(rng.uniform(0, 1024)), "y": float(rng.uniform(0, 1024)),
               "w": float(rng.uniform(0, 512)), "h": float(rng.uniform(0, 512)), "score": float(rng.uniform())}
              for i in range(16)] for _ in range(n)]
    columns = {"image_index": pa.array([f"{k:08d}_000.png" for k in range(n)])}
    for j, column in enumerate(FINDING_COLUMNS):
        columns[column] = pa.array(rng.uniform(size=n).astype(np.float32))
    columns["heatmap"] = pa.array(encode_heatmaps(maps), pa.binary())
    columns["boxes"] = pa.array(boxes, BOXES_TYPE)
    table = pa.table(columns).replace_schema_metadata(
        {HEATMAP_METADATA_KEY: json.dumps(HEATMAP_SCHEMA_METADATA(8, 8, "fast_cam"))})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    assert buffer.tell() / n <= 2048
    back = pq.read_table(io.BytesIO(buffer.getvalue()))
    assert np.abs(decode_heatmaps(back["heatmap"], (8, 8)).astype(int) - maps).max() <= 5
    assert back["boxes"].type == BOXES_TYPE
