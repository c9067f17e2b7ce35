"""Where a heatmap's cells sit in the image, and upsampling that respects it.

A stored map has (h, w) cells. For the CAM family a cell is a feature-map position, whose value belongs at
the centre of that position's receptive field: (offset + stride·i + 0.5) / S of an S-pixel input
(`thorax_ray.models.receptive_field_centres`; e.g. half a cell before the cell's middle for stride-2 3x3
convolutions). For pixel methods a cell is the average of an equal bin of pixels, centred in the bin.
The centres travel in the heatmap metadata ("cell_centres": {"rows", "cols"}, fractions of the side), and
`upsample_maps` interpolates bilinearly between them (constant beyond the outermost ones).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np

Centres = tuple[Sequence[float], Sequence[float]]
"""(row centres, column centres) of a map's cells as fractions of the image height / width."""


def interpolation_matrix(size: int, cells: int, centres: Sequence[float] | None = None) -> np.ndarray:
    """(size, cells) weights: linear interpolation at the pixel centres (j + 0.5) / size of one axis between
    cell values placed at `centres` (fractions of the side, increasing; default (i + 0.5) / cells, which is
    `F.interpolate(..., align_corners=False)`), constant beyond the first and last centre."""
    nodes = (np.arange(cells) + 0.5) / cells if centres is None else np.asarray(centres, dtype=np.float64)
    if nodes.shape != (cells,) or (cells > 1 and not np.all(np.diff(nodes) > 0)):
        raise ValueError(f"need {cells} increasing cell centres, got {None if centres is None else list(centres)}")
    weights = np.zeros((int(size), cells))
    rows = np.arange(int(size))
    if cells == 1:
        weights[:, 0] = 1.0
        return weights
    x = (rows + 0.5) / size
    right = np.clip(np.searchsorted(nodes, x, side="right"), 1, cells - 1)
    left = right - 1
    t = np.clip((x - nodes[left]) / (nodes[right] - nodes[left]), 0.0, 1.0)
    weights[rows, left] = 1.0 - t
    weights[rows, right] += t
    return weights


def upsample_maps(maps: np.ndarray, width: int, height: int, centres: Centres | None = None) -> np.ndarray:
    """(K, h, w) uint8/float maps -> float32 (K, height, width), bilinear between the cell centres
    (`centres` = (rows, columns) as fractions of the side; default: the middle of equal cells)."""
    maps = np.asarray(maps, dtype=np.float32)
    h, w = maps.shape[-2:]
    rows = _axis_weights(int(height), h, None if centres is None else tuple(map(float, centres[0])))
    cols = _axis_weights(int(width), w, None if centres is None else tuple(map(float, centres[1])))
    return np.ascontiguousarray(rows @ (maps @ cols.T))


@functools.lru_cache(maxsize=256)
def _axis_weights(size: int, cells: int, centres: tuple[float, ...] | None) -> np.ndarray:
    """`interpolation_matrix` as float32, computed once per (size, cells, centres): a scoring run boxes
    thousands of maps of a handful of image sizes."""
    weights = interpolation_matrix(size, cells, centres).astype(np.float32)
    weights.flags.writeable = False
    return weights


def bin_centres(cells: int) -> list[float]:
    """Centres of `cells` equal bins of a side, as fractions: (i + 0.5) / cells."""
    return [(i + 0.5) / cells for i in range(int(cells))]


def pooled_centres(centres: Sequence[float], cells: int) -> list[float]:
    """Centres after adaptive average pooling of len(centres) cells to `cells` (`F.adaptive_avg_pool2d`'s
    bins: floor(k·n/cells) .. ceil((k + 1)·n/cells)): the mean centre of each bin's cells."""
    n = len(centres)
    values = np.asarray(centres, dtype=np.float64)
    return [float(values[(k * n) // cells: math.ceil((k + 1) * n / cells)].mean()) for k in range(int(cells))]


def centres_from_metadata(description: Mapping | None) -> Centres | None:
    """(rows, cols) from a heatmap description's "cell_centres"; None (equal cells) when it has none."""
    centres = (description or {}).get("cell_centres")
    if not centres:
        return None
    return tuple(centres["rows"]), tuple(centres["cols"])
