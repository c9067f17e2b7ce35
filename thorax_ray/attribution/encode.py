"""Compact heatmap storage: uint8 maps of all 14 findings at feature-map resolution, one bytes per image.

Layout of one stored value: the uint8 array (14, h, w) in C order (class, row, column), classes in
`FINDINGS` order, so a 224 px DenseNet map (7x7) takes 14·49 = 686 bytes and a 128 px small_cnn
map (8x8) 896 bytes. `HEATMAP_SCHEMA_METADATA(h, w, method)` describes this for the Parquet
schema (store it JSON-encoded under `HEATMAP_METADATA_KEY`).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from thorax_ray.labels import FINDINGS, NUM_FINDINGS

HEATMAP_METADATA_KEY = "thorax_ray.heatmap"
HEATMAP_NORMALISATION = "per-class min-max to 0..255 over the map"


def normalise_maps(maps: torch.Tensor | np.ndarray) -> np.ndarray:
    """Raw maps (N, K, h, w) -> uint8 (N, K, h, w), each (image, class) map min-max scaled to 0..255.

    A constant map (including all zeros, e.g. a CAM whose class has no positive evidence) becomes
    all 0; non-finite values count as 0.
    """
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().to("cpu", torch.float64).numpy()
    array = np.nan_to_num(np.asarray(maps, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if array.ndim != 4:
        raise ValueError(f"maps must be (N, K, h, w), got shape {array.shape}")
    low = array.min(axis=(2, 3), keepdims=True)
    span = array.max(axis=(2, 3), keepdims=True) - low
    scaled = np.divide(array - low, span, out=np.zeros_like(array), where=span > 0)
    return np.rint(scaled * 255.0).clip(0, 255).astype(np.uint8)


def encode_heatmaps(maps: np.ndarray) -> list[bytes]:
    """uint8 maps (N, 14, h, w) -> one bytes value per image (C order, 14·h·w bytes)."""
    array = np.asarray(maps)
    if array.dtype != np.uint8:
        raise TypeError(f"encode_heatmaps takes uint8 maps (see normalise_maps), got {array.dtype}")
    if array.ndim != 4 or array.shape[1] != NUM_FINDINGS:
        raise ValueError(f"maps must be (N, {NUM_FINDINGS}, h, w), got shape {array.shape}")
    return [np.ascontiguousarray(image).tobytes() for image in array]


def decode_heatmaps(values: Iterable[bytes | bytearray | memoryview], shape: Sequence[int]) -> np.ndarray:
    """Inverse of `encode_heatmaps`: uint8 (N, 14, h, w). `shape` is (h, w) or (14, h, w).

    `values` may also be a pyarrow binary array / chunked array.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        shape = (NUM_FINDINGS, *shape)
    if len(shape) != 3 or shape[0] != NUM_FINDINGS:
        raise ValueError(f"shape must be (h, w) or ({NUM_FINDINGS}, h, w), got {shape}")
    if hasattr(values, "to_pylist"):
        values = values.to_pylist()
    size = int(np.prod(shape))
    out = []
    for i, value in enumerate(values):
        if value is None or len(value) != size:
            raise ValueError(f"heatmap {i} has {None if value is None else len(value)} bytes, expected {size} "
                             f"for shape {shape}")
        out.append(np.frombuffer(bytes(value), dtype=np.uint8).reshape(shape))
    return np.stack(out) if out else np.zeros((0, *shape), dtype=np.uint8)


def HEATMAP_SCHEMA_METADATA(h: int, w: int, method: str) -> dict[str, Any]:  # noqa: N802 (a schema constant)
    """JSON-able description of the `heatmap` column for maps of (h, w) cells made by `method`."""
    return {
        "shape": [NUM_FINDINGS, int(h), int(w)],
        "dtype": "uint8",
        "layout": "C order (class, row, column); one binary value of 14*h*w bytes per image",
        "normalisation": HEATMAP_NORMALISATION,
        "constant_map": "all 0 (including maps with no positive evidence)",
        "classes": list(FINDINGS),
        "alignment": (
            f"map cell (i, j) covers image rows i*S/{h}..(i+1)*S/{h} and columns j*S/{w}..(j+1)*S/{w} "
            "of the scored S x S image (and the same fractions of the original image); cell values sit at "
            "cell centres, so upsample bilinearly with align_corners=False"
        ),
        "method": str(method),
    }
