"""Compact heatmap storage: maps of all 14 findings at feature-map resolution, one bytes value per image.

The maps are the uint8 array (14, h, w), classes in `FINDINGS` order, each (image, class) map min-max
scaled to 0..255 (`normalise_maps`). Two encodings of one image's value, told apart by length:

- "uint8" (14·h·w bytes): the array in C order (class, row, column). Written by older runs.
- "planar<b>" (1 + 14·h·w bytes; the default is b = 5): a leading byte b, then the maps quantised to
  2**b levels 0..L, L = 2**b - 1 (q = round(v·L/255); b = 8 keeps every value: lossless) and replaced, in
  C order, by the residuals of the planar
  predictor r[i, j] = q[i, j] - q[i, j-1] - q[i-1, j] + q[i-1, j-1] (0 outside the map) mod 256;
  decoding is two cumulative sums mod 256 and v = round(q·255/L). Neighbouring cells are alike, so the
  residuals are small and the Parquet zstd compresses them: 16x16 maps of trained small_cnns took
  1.36 KB (raw CAM) to 1.53 KB (ReLU'd) per image instead of 3.1 KB as uint8, which keeps the whole
  row within the 2 KB per image budget; values come back within 5 of 255 (a 32-level step is 8.2, so the
  stored maps cut at Wang et al.'s 60 and 180 act as cuts at 62 and 177 of the exact maps). The scoring
  job's `--heatmap-bits 8` stores them lossless (`bench/heatmap_bytes.py` measures what that costs).

`decode_heatmaps` reads every encoding. `HEATMAP_SCHEMA_METADATA(h, w, method, centres, encoding=...)` describes the
column for the
Parquet schema (stored JSON-encoded under `HEATMAP_METADATA_KEY`), including where the cells sit (geometry.py).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from thorax_ray.labels import FINDINGS, NUM_FINDINGS

HEATMAP_METADATA_KEY = "thorax_ray.heatmap"
HEATMAP_NORMALISATION = "per-class min-max to 0..255 over the map"
PLANAR_BITS = range(1, 9)
DEFAULT_HEATMAP_BITS = 5  # what the scoring job writes unless told (ScoreConfig.heatmap_bits)
HEATMAP_ENCODING = f"planar{DEFAULT_HEATMAP_BITS}"


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


def encode_heatmaps(maps: np.ndarray, encoding: str = HEATMAP_ENCODING) -> list[bytes]:
    """uint8 maps (N, 14, h, w) -> one bytes value per image in `encoding` (module docstring)."""
    array = np.asarray(maps)
    if array.dtype != np.uint8:
        raise TypeError(f"encode_heatmaps takes uint8 maps (see normalise_maps), got {array.dtype}")
    if array.ndim != 4 or array.shape[1] != NUM_FINDINGS:
        raise ValueError(f"maps must be (N, {NUM_FINDINGS}, h, w), got shape {array.shape}")
    if encoding == "uint8":
        return [np.ascontiguousarray(image).tobytes() for image in array]
    bits = planar_bits(encoding)
    top = (1 << bits) - 1
    levels = (array.astype(np.int32) * top + 127) // 255
    residuals = levels.copy()
    residuals[..., :, 1:] -= levels[..., :, :-1]
    residuals[..., 1:, :] -= levels[..., :-1, :]
    residuals[..., 1:, 1:] += levels[..., :-1, :-1]
    residuals = (residuals % 256).astype(np.uint8)
    marker = bytes([bits])
    return [marker + np.ascontiguousarray(image).tobytes() for image in residuals]


def planar_bits(encoding: str) -> int:
    """b of "planar<b>"; a ValueError naming the known encodings for any other text but "uint8" (which has none)."""
    bits = int(encoding[len("planar"):]) if encoding[len("planar"):].isdigit() else 0
    if not encoding.startswith("planar") or bits not in PLANAR_BITS:
        raise ValueError(f"unknown heatmap encoding {encoding!r}; known: uint8, planar1 .. planar8")
    return bits


def encoding_levels(encoding: str) -> int | str:
    """The distinct values an encoding keeps: 2**b for planar<b> with b < 8, "lossless" for planar8 and uint8."""
    if encoding == "uint8":
        return "lossless"
    bits = planar_bits(encoding)
    return "lossless" if bits == 8 else 1 << bits


def _layout(encoding: str) -> str:
    if encoding == "uint8":
        return "C order (class, row, column); one binary value of 14*h*w bytes per image: the uint8 maps as they are"
    bits = planar_bits(encoding)
    levels = "all 256 levels (lossless)" if bits == 8 else f"quantised to {1 << bits} levels"
    return (f"C order (class, row, column); one binary value of 1 + 14*h*w bytes per image: byte {bits}, then the maps "
            f"{levels} as planar-predictor residuals mod 256 (thorax_ray.attribution.decode_heatmaps reads it)")


def _planar_decode(values: list[bytes], shape: tuple[int, int, int]) -> np.ndarray:
    """Values that all start with the same bits byte -> uint8 maps."""
    top = (1 << values[0][0]) - 1
    residuals = np.stack([np.frombuffer(v, dtype=np.uint8, offset=1) for v in values]).reshape(len(values), *shape)
    levels = np.cumsum(np.cumsum(residuals.astype(np.int64), axis=-2), axis=-1) % 256
    return ((levels * 255 + top // 2) // top).clip(0, 255).astype(np.uint8)


def decode_heatmaps(values: Iterable[bytes | bytearray | memoryview], shape: Sequence[int]) -> np.ndarray:
    """Inverse of `encode_heatmaps` for either encoding (told apart by length): uint8 (N, 14, h, w).
    `shape` is (h, w) or (14, h, w). `values` may also be a pyarrow binary array / chunked array.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        shape = (NUM_FINDINGS, *shape)
    if len(shape) != 3 or shape[0] != NUM_FINDINGS:
        raise ValueError(f"shape must be (h, w) or ({NUM_FINDINGS}, h, w), got {shape}")
    if hasattr(values, "to_pylist"):
        values = values.to_pylist()
    size = int(np.prod(shape))
    values = [None if v is None else bytes(v) for v in values]
    out = np.zeros((len(values), *shape), dtype=np.uint8)
    planar: dict[int, list[int]] = {}  # bits -> rows
    for i, value in enumerate(values):
        if value is not None and len(value) == size:
            out[i] = np.frombuffer(value, dtype=np.uint8).reshape(shape)
        elif value is not None and len(value) == size + 1 and value[0] in PLANAR_BITS:
            planar.setdefault(value[0], []).append(i)
        else:
            raise ValueError(f"heatmap {i} has {None if value is None else len(value)} bytes, expected {size} "
                             f"(uint8) or {size + 1} (planar) for shape {shape}")
    for rows in planar.values():
        out[rows] = _planar_decode([values[i] for i in rows], shape)
    return out


def HEATMAP_SCHEMA_METADATA(h: int, w: int, method: str,  # noqa: N802 (a schema constant)
                            centres: tuple[Sequence[float], Sequence[float]] | None = None, *,
                            encoding: str = HEATMAP_ENCODING) -> dict[str, Any]:
    """JSON-able description of the `heatmap` column for maps of (h, w) cells made by `method`, stored in
    `encoding`; `centres` = (rows, cols) where each cell's value belongs, as fractions of the image height /
    width (default: the middle of equal cells). "levels": the distinct values kept (2**b, or "lossless")."""
    description = {
        "shape": [NUM_FINDINGS, int(h), int(w)],
        "dtype": "uint8",
        "encoding": encoding,
        "levels": encoding_levels(encoding),
        "layout": _layout(encoding),
        "normalisation": HEATMAP_NORMALISATION,
        "constant_map": "all 0 (including maps with no positive evidence)",
        "classes": list(FINDINGS),
        "alignment": (
            f"map cell (i, j) covers image rows i*S/{h}..(i+1)*S/{h} and columns j*S/{w}..(j+1)*S/{w} "
            "of the scored S x S image (and the same fractions of the original image); cell values sit at "
            "cell centres, so upsample bilinearly with align_corners=False"
        ) if centres is None else (
            "the value of cell (i, j) belongs at fraction cell_centres.rows[i] of the image height and "
            "cell_centres.cols[j] of its width (the centre of the receptive field of that feature-map "
            "position, for every frame: scored or original); upsample bilinearly between these points, "
            "constant beyond the outermost ones (thorax_ray.attribution.upsample_maps)"
        ),
        "method": str(method),
    }
    if centres is not None:
        description["cell_centres"] = {"rows": [float(c) for c in centres[0]], "cols": [float(c) for c in centres[1]]}
    return description
