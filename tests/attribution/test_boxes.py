"""Wang et al. 2017 style boxes from uint8 heatmaps."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from thorax_ray.attribution import BOXES_TYPE, boxes_for_batch, boxes_for_image
from thorax_ray.attribution.boxes import BOX_STRUCT
from thorax_ray.labels import BOXED_FINDINGS, FINDINGS, NUM_FINDINGS


def _maps(h: int = 8, w: int = 8) -> np.ndarray:
    return np.zeros((NUM_FINDINGS, h, w), dtype=np.uint8)


def _two_blobs() -> np.ndarray:
    maps = _maps()
    maps[FINDINGS.index("Mass"), 1:3, 1:3] = 255  # rows 1-2, cols 1-2 (small blob)
    maps[FINDINGS.index("Mass"), 4:7, 4:8] = 230  # rows 4-6, cols 4-7 (large blob, touches the edge)
    return maps


def test_two_blobs_give_two_boxes_in_original_pixels():
    width, height = 1024, 512  # cell = 128 px wide, 64 px high
    boxes = boxes_for_image(_two_blobs(), width, height)
    assert [b["finding"] for b in boxes] == ["Mass", "Mass"]
    large, small = boxes  # largest component first
    assert large["w"] * large["h"] > small["w"] * small["h"]
    # Ideal boxes are the blob cells scaled; bilinear edges move each side by under half a cell.
    for box, (col0, row0, col1, row1) in [(small, (1, 1, 3, 3)), (large, (4, 4, 8, 7))]:
        assert abs(box["x"] - col0 * 128) < 64 and abs(box["x"] + box["w"] - col1 * 128) < 64
        assert abs(box["y"] - row0 * 64) < 32 and abs(box["y"] + box["h"] - row1 * 64) < 32
    assert large["x"] + large["w"] == width  # the blob touching the right edge reaches it
    assert 180 / 255 <= small["score"] <= 1.0
    assert 180 / 255 <= large["score"] <= 230 / 255 + 1e-6
    peak = boxes_for_image(_two_blobs(), width, height, score="max")
    assert peak[1]["score"] == pytest.approx(1.0) and peak[0]["score"] == pytest.approx(230 / 255)


def test_threshold_behaviour():
    maps = _maps()
    index = FINDINGS.index("Effusion")
    maps[index, 0:2, 0:2] = 200
    maps[index, 5:8, 5:8] = 150
    assert len(boxes_for_image(maps, 256, 256)) == 1  # default 180: only the 200 blob
    assert len(boxes_for_image(maps, 256, 256, threshold=100)) == 2
    assert boxes_for_image(maps, 256, 256, threshold=201) == []
    low = boxes_for_image(maps, 256, 256, threshold=100)
    high = boxes_for_image(maps, 256, 256, threshold=190)
    big_low = max(low, key=lambda b: b["w"] * b["h"])
    assert high[0]["w"] < [b for b in low if b["x"] < 64][0]["w"]  # a higher threshold shrinks a box
    assert big_low["x"] > 128


def test_empty_and_filters():
    assert boxes_for_image(_maps(), 1024, 1024) == []
    maps = _two_blobs()
    assert len(boxes_for_image(maps, 64, 64, max_boxes=1)) == 1
    assert boxes_for_image(maps, 64, 64, max_boxes=0) == []
    hernia = _maps()
    hernia[FINDINGS.index("Hernia")] = maps[FINDINGS.index("Mass")]
    assert "Hernia" not in BOXED_FINDINGS
    assert boxes_for_image(hernia, 64, 64) == []  # default: only the 8 boxed findings
    assert len(boxes_for_image(hernia, 64, 64, findings="all")) == 2
    assert len(boxes_for_image(hernia, 64, 64, findings=["Hernia"])) == 2
    probs = np.zeros(NUM_FINDINGS)
    assert boxes_for_image(maps, 64, 64, probabilities=probs, min_probability=0.5) == []
    probs[FINDINGS.index("Mass")] = 0.9
    assert len(boxes_for_image(maps, 64, 64, probabilities=probs, min_probability=0.5)) == 2
    with pytest.raises(ValueError, match="unknown finding"):
        boxes_for_image(maps, 64, 64, findings=["Infiltrate"])
    with pytest.raises(ValueError, match="needs probabilities"):
        boxes_for_image(maps, 64, 64, min_probability=0.5)
    with pytest.raises(ValueError, match=r"\(14, h, w\)"):
        boxes_for_image(maps[:8], 64, 64)


def test_batch_and_arrow_type():
    maps = np.stack([_two_blobs(), _maps()])
    batch = boxes_for_batch(maps, [1024, 512], 1024)
    assert len(batch) == 2 and len(batch[0]) == 2 and batch[1] == []
    column = pa.array(batch, BOXES_TYPE)
    assert column.type.value_type == BOX_STRUCT
    # every key of a box dict is a field of the struct (pyarrow would drop an unknown one silently)
    stored = column.to_pylist()
    assert [[set(box) for box in image] for image in stored] == [[set(box) for box in image] for image in batch]
    for box, original in zip(stored[0], batch[0]):
        assert box["finding"] == original["finding"]
        assert all(box[k] == pytest.approx(original[k], rel=1e-6) for k in ("x", "y", "w", "h", "score"))
    assert stored[0][0]["finding"] == "Mass"


def test_per_finding_probability_gate():
    maps = _two_blobs()
    maps[FINDINGS.index("Nodule")] = maps[FINDINGS.index("Mass")]
    probs = np.full(NUM_FINDINGS, 0.3)
    gate = np.full(NUM_FINDINGS, 0.9)
    gate[FINDINGS.index("Nodule")] = 0.25  # Nodule's operating point is low, Mass's high
    boxes = boxes_for_image(maps, 64, 64, probabilities=probs, min_probability=gate)
    assert {b["finding"] for b in boxes} == {"Nodule"}
    assert {b["finding"] for b in boxes_for_image(maps, 64, 64, probabilities=probs, min_probability=0.2)} == \
        {"Mass", "Nodule"}
    with pytest.raises(ValueError, match="one value or 14"):
        boxes_for_image(maps, 64, 64, probabilities=probs, min_probability=[0.1, 0.2])
