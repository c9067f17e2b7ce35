"""Bounding boxes from uint8 heatmaps as Wang et al. 2017 (ChestX-ray8, section 3.2, "Bounding Box
Generation") make them: "The intensities in heatmaps are first normalized to [0, 255] and then
thresholded by {60, 180} individually. Finally, B-Boxes are generated to cover the isolated regions in
the resulting binary maps."

For each finding: upsample its map (h, w) bilinearly to the original image size, with each cell's value
placed at its centre (`centres`: where the feature-map positions' receptive fields are centred, from the
heatmap metadata; default: the middle of equal cells, i.e. `align_corners=False`) and held constant
beyond the outermost centres; keep pixels >= each threshold (of 255), label connected components
(`scipy.ndimage.label`, 4-connectivity) and box each component: `(x, y, w, h)` in original-image pixels
(x, y = top-left corner; w, h = extent), `score` = mean (or max) map value inside the component / 255.
`max_boxes` keeps the largest components (by pixel count) per finding and threshold; None keeps every one
(Wang's protocol, `WANG_THRESHOLDS` with `max_boxes=None`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pyarrow as pa
from scipy import ndimage

from thorax_ray.attribution.geometry import Centres, upsample_maps
from thorax_ray.labels import BOXED_FINDINGS, FINDINGS, NUM_FINDINGS

DEFAULT_THRESHOLD = 180  # the scoring job's boxes: one threshold, the largest regions
DEFAULT_MAX_BOXES = 2
WANG_THRESHOLDS = (60, 180)  # Wang et al. 2017: both thresholds, every isolated region

BOX_STRUCT = pa.struct([
    ("finding", pa.string()),
    ("x", pa.float32()),
    ("y", pa.float32()),
    ("w", pa.float32()),
    ("h", pa.float32()),
    ("score", pa.float32()),
])
"""One box; the Parquet `boxes` column is `BOXES_TYPE` = list<BOX_STRUCT>."""
BOXES_TYPE = pa.list_(BOX_STRUCT)

_INDEX = {name: i for i, name in enumerate(FINDINGS)}
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)  # scipy's default for 2-D, built once


def _finding_indices(findings: Sequence[str] | str | None) -> list[int]:
    if findings is None:
        findings = BOXED_FINDINGS
    elif findings == "all":
        findings = FINDINGS
    elif isinstance(findings, str):
        findings = (findings,)
    unknown = [f for f in findings if f not in _INDEX]
    if unknown:
        raise ValueError(f"unknown finding(s) {unknown}; known: {', '.join(FINDINGS)} (or 'all')")
    return [_INDEX[f] for f in findings]


def component_boxes(upsampled: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD,
                    max_boxes: int | None = DEFAULT_MAX_BOXES,
                    score: Literal["mean", "max"] = "mean") -> list[tuple[float, float, float, float, float]]:
    """Boxes `(x, y, w, h, score)` of the largest `max_boxes` components of `upsampled >= threshold`
    (None: every component)."""
    mask = upsampled >= threshold
    labels, count = ndimage.label(mask, structure=_FOUR_CONNECTED)
    if count == 0:
        return []
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    slices = ndimage.find_objects(labels)
    boxes = []
    for k in np.argsort(-areas, kind="stable")[:max_boxes]:
        rows, cols = slices[k]
        inside = upsampled[rows, cols][labels[rows, cols] == k + 1]
        value = float(inside.mean() if score == "mean" else inside.max())
        boxes.append((float(cols.start), float(rows.start), float(cols.stop - cols.start),
                      float(rows.stop - rows.start), value / 255.0))
    return boxes


def boxes_for_image(maps: np.ndarray, width: int, height: int, *,
                    findings: Sequence[str] | str | None = None,
                    probabilities: Sequence[float] | np.ndarray | None = None,
                    min_probability: float | Sequence[float] | None = None,
                    threshold: float | Sequence[float] = DEFAULT_THRESHOLD,
                    max_boxes: int | None = DEFAULT_MAX_BOXES,
                    score: Literal["mean", "max"] = "mean", centres: Centres | None = None) -> list[dict]:
    """Boxes of one image from its uint8 maps (14, h, w), in pixels of a `width` x `height` image.

    findings: names to box (default `BOXED_FINDINGS`, the 8 with ground-truth boxes; "all" = 14).
    probabilities / min_probability: skip findings whose probability (FINDINGS order) is lower than
    `min_probability` (one value for all findings, or one per finding in FINDINGS order).
    threshold: on the 0..255 map scale, one value or several (Wang et al.: 60 and 180, boxes of each).
    max_boxes: largest components kept per finding and threshold (None: all). centres: where the cells sit
    (module docstring). Returns dicts `{finding, x, y, w, h, score}` in FINDINGS order, then by
    threshold (ascending), largest component first.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.shape[0] != NUM_FINDINGS:
        raise ValueError(f"maps must be ({NUM_FINDINGS}, h, w), got shape {maps.shape}")
    if int(width) < 1 or int(height) < 1:
        raise ValueError(f"width and height must be positive, got {width} x {height}")
    if score not in ("mean", "max"):
        raise ValueError(f"score must be 'mean' or 'max', got {score!r}")
    if max_boxes is not None and max_boxes < 1:
        return []
    thresholds = sorted({float(t) for t in np.atleast_1d(threshold)})
    indices = _finding_indices(findings)
    if min_probability is not None:
        if probabilities is None:
            raise ValueError("min_probability needs probabilities")
        probs = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        if probs.shape[0] != NUM_FINDINGS:
            raise ValueError(f"probabilities must have {NUM_FINDINGS} values, got {probs.shape[0]}")
        gate = np.asarray(min_probability, dtype=np.float64).reshape(-1)
        if gate.size not in (1, NUM_FINDINGS):
            raise ValueError(f"min_probability must be one value or {NUM_FINDINGS}, got {gate.size}")
        gate = np.broadcast_to(gate, (NUM_FINDINGS,))
        indices = [i for i in indices if probs[i] >= gate[i]]
    # Bilinear interpolation never exceeds the largest cell value: skip maps below every threshold.
    indices = [i for i in indices if float(maps[i].max()) >= thresholds[0]]
    if not indices:
        return []
    upsampled = upsample_maps(maps[indices], width, height, centres)
    out = []
    for row, i in zip(upsampled, indices):
        for level in thresholds:
            for x, y, w, h, value in component_boxes(row, threshold=level, max_boxes=max_boxes, score=score):
                out.append({"finding": FINDINGS[i], "x": x, "y": y, "w": w, "h": h, "score": value})
    return out


def boxes_for_batch(maps: np.ndarray, widths: Sequence[int] | int, heights: Sequence[int] | int,
                    **options) -> list[list[dict]]:
    """`boxes_for_image` for each image of uint8 maps (N, 14, h, w); sizes per image or shared."""
    maps = np.asarray(maps)
    n = maps.shape[0]
    widths = [widths] * n if np.isscalar(widths) else list(widths)
    heights = [heights] * n if np.isscalar(heights) else list(heights)
    if len(widths) != n or len(heights) != n:
        raise ValueError(f"need {n} widths and heights, got {len(widths)} and {len(heights)}")
    probabilities = options.pop("probabilities", None)
    return [boxes_for_image(maps[k], widths[k], heights[k], **options,
                            probabilities=None if probabilities is None else probabilities[k])
            for k in range(n)]
