"""Patient-metadata features: which manifest columns a model sees and their encoding.

`MetadataFeatures` says which manifest columns a model sees and turns them into a float32 matrix.
The encoding is a pure function of each row: every numeric feature is standardised with FIXED
constants (written below, recorded in checkpoints through `to_dict`), never with statistics fitted
on the data, so the same row always encodes to the same vector and nothing has to be fitted or
stored besides the feature list.

Layout (in this order, only the selected groups; `names` lists the columns):

=================  ======================================================================  ====
group              columns                                                                  dim
=================  ======================================================================  ====
``age``            ``age`` = (age_years - 46.6) / 16.6, ``age_missing``                      2
``sex``            one-hot ``sex_M``, ``sex_F``, ``sex_missing``                             3
``view_position``  one-hot ``view_PA``, ``view_AP``, ``view_other``, ``view_missing``        4
``follow_up``      ``follow_up`` = (log1p(follow_up) - 1.5) / 1.3, ``follow_up_missing``     2
``original_size``  ``original_width`` / 1000, ``.._missing``, ``original_height`` / 1000,    4
                   ``.._missing``
``pixel_spacing``  ``pixel_spacing_x`` / 0.15, ``.._missing``, ``pixel_spacing_y`` / 0.15,   4
                   ``.._missing``
=================  ======================================================================  ====

Missing values: a numeric value that is NaN / None / pd.NA, not finite, or out of range (negative
age / follow-up / size / spacing) gives value 0 and indicator 1. Sex other than M/F (after
upper-casing; "MALE"/"FEMALE" accepted) is "missing". A view position that is present but neither
PA nor AP (including the manifest's "other") is "other"; None/NaN/empty is "missing".
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

# ----- fixed encoding constants (do not fit; changing them changes ENCODING_VERSION) ----------------
AGE_MEAN_YEARS = 46.6
AGE_SD_YEARS = 16.6
FOLLOW_UP_LOG1P_MEAN = 1.5  # approx. mean of log1p(Follow-up #) over ChestX-ray14
FOLLOW_UP_LOG1P_SD = 1.3
SIZE_SCALE_PX = 1000.0
PIXEL_SPACING_SCALE_MM = 0.15
ENCODING_VERSION = 1

AVAILABLE_FEATURES: tuple[str, ...] = (
    "age", "sex", "view_position", "follow_up", "original_size", "pixel_spacing",
)
"""Every feature group, in the fixed order used by the encoding."""
DEFAULT_FEATURES: tuple[str, ...] = ("age", "sex", "view_position")
"""What the metadata model sees unless told otherwise. `follow_up` (Follow-up #) is opt-in: it counts a
patient's earlier films, a proxy of care intensity whose distribution differs between NIH's official
train and test lists, so it would confound a CNN-vs-metadata comparison."""
FOLLOW_UP_FEATURES: tuple[str, ...] = (*DEFAULT_FEATURES, "follow_up")

_GROUP_NAMES: dict[str, tuple[str, ...]] = {
    "age": ("age", "age_missing"),
    "sex": ("sex_M", "sex_F", "sex_missing"),
    "view_position": ("view_PA", "view_AP", "view_other", "view_missing"),
    "follow_up": ("follow_up", "follow_up_missing"),
    "original_size": ("original_width", "original_width_missing",
                      "original_height", "original_height_missing"),
    "pixel_spacing": ("pixel_spacing_x", "pixel_spacing_x_missing",
                      "pixel_spacing_y", "pixel_spacing_y_missing"),
}
_GROUP_COLUMNS: dict[str, tuple[str, ...]] = {
    "age": ("age_years",),
    "sex": ("sex",),
    "view_position": ("view_position",),
    "follow_up": ("follow_up",),
    "original_size": ("original_width", "original_height"),
    "pixel_spacing": ("pixel_spacing_x", "pixel_spacing_y"),
}


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Column as float64 with NaN for anything missing or not a number."""
    values = pd.to_numeric(frame[column], errors="coerce")
    return np.asarray(values.to_numpy(dtype="float64", na_value=np.nan), dtype=np.float64)


def _value_and_missing(raw: np.ndarray, transform, *, allow_negative: bool = False) -> list[np.ndarray]:
    missing = ~np.isfinite(raw)
    if not allow_negative:
        missing |= raw < 0  # NaN < 0 is False
    safe = np.where(missing, 0.0, raw)
    value = np.where(missing, 0.0, transform(safe))
    return [value, missing.astype(np.float64)]


def _slots(series: pd.Series, slot_of: Mapping[str, int], other: int, missing: int) -> np.ndarray:
    """One slot per row, vectorised: rows are factorised (hash-based, in C) and only the distinct values
    are normalised (strip, upper-case, `slot_of`, else `other`). None / NaN / pd.NA and strings empty
    after stripping are `missing`."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    texts = [str(value).strip().upper() for value in uniques]
    lookup = np.array([slot_of.get(text, other) if text else missing for text in texts] + [missing],
                      dtype=np.int64)
    return lookup[codes]  # the NA sentinel -1 picks the trailing `missing`


def _sex_codes(frame: pd.DataFrame) -> np.ndarray:
    slots = _slots(frame["sex"], {"M": 0, "MALE": 0, "F": 1, "FEMALE": 1}, other=2, missing=2)
    return np.eye(3, dtype=np.float64)[slots]


def _view_codes(frame: pd.DataFrame) -> np.ndarray:
    slots = _slots(frame["view_position"], {"PA": 0, "AP": 1}, other=2, missing=3)
    return np.eye(4, dtype=np.float64)[slots]


def _encode_group(group: str, frame: pd.DataFrame) -> list[np.ndarray]:
    if group == "age":
        return _value_and_missing(_numeric(frame, "age_years"), lambda a: (a - AGE_MEAN_YEARS) / AGE_SD_YEARS)
    if group == "sex":
        return list(_sex_codes(frame).T)
    if group == "view_position":
        return list(_view_codes(frame).T)
    if group == "follow_up":
        return _value_and_missing(
            _numeric(frame, "follow_up"),
            lambda f: (np.log1p(f) - FOLLOW_UP_LOG1P_MEAN) / FOLLOW_UP_LOG1P_SD,
        )
    if group == "original_size":
        return [*_value_and_missing(_numeric(frame, "original_width"), lambda v: v / SIZE_SCALE_PX),
                *_value_and_missing(_numeric(frame, "original_height"), lambda v: v / SIZE_SCALE_PX)]
    if group == "pixel_spacing":
        return [*_value_and_missing(_numeric(frame, "pixel_spacing_x"), lambda v: v / PIXEL_SPACING_SCALE_MM),
                *_value_and_missing(_numeric(frame, "pixel_spacing_y"), lambda v: v / PIXEL_SPACING_SCALE_MM)]
    raise ValueError(f"unknown metadata feature {group!r}")  # pragma: no cover - validated earlier


@dataclass(frozen=True)
class MetadataFeatures:
    """Which patient features a model uses. Immutable, hashable, stored in checkpoints (`to_dict`).

    `features` is normalised to the fixed order of `AVAILABLE_FEATURES` (duplicates removed), so
    `MetadataFeatures(("sex", "age")) == MetadataFeatures(("age", "sex"))`.
    """

    features: tuple[str, ...] = DEFAULT_FEATURES

    def __post_init__(self) -> None:
        requested = (self.features,) if isinstance(self.features, str) else tuple(self.features)
        unknown = [f for f in requested if f not in AVAILABLE_FEATURES]
        if unknown:
            raise ValueError(
                f"unknown metadata feature(s) {unknown}; available: {list(AVAILABLE_FEATURES)}"
            )
        if not requested:
            raise ValueError(f"MetadataFeatures needs at least one feature of {list(AVAILABLE_FEATURES)}")
        ordered = tuple(f for f in AVAILABLE_FEATURES if f in requested)
        object.__setattr__(self, "features", ordered)

    @property
    def names(self) -> list[str]:
        """One name per encoded column, in column order (for attributions and reports)."""
        return [name for group in self.features for name in _GROUP_NAMES[group]]

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def columns(self) -> tuple[str, ...]:
        """Manifest columns `encode` reads."""
        return tuple(c for group in self.features for c in _GROUP_COLUMNS[group])

    def encode(self, frame: pd.DataFrame | Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> np.ndarray:
        """Manifest rows -> float32 array (N, dim). A single mapping is one row."""
        if isinstance(frame, Mapping):
            frame = pd.DataFrame([dict(frame)])
        elif not isinstance(frame, pd.DataFrame):
            frame = pd.DataFrame(list(frame))
        absent = [c for c in self.columns if c not in frame.columns]
        if absent:
            raise ValueError(f"metadata frame lacks column(s) {absent} needed by features {list(self.features)}")
        if len(frame) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        columns: list[np.ndarray] = []
        for group in self.features:
            columns.extend(_encode_group(group, frame))
        return np.stack(columns, axis=1).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "names": self.names,
            "encoding_version": ENCODING_VERSION,
            "constants": {
                "age_mean_years": AGE_MEAN_YEARS, "age_sd_years": AGE_SD_YEARS,
                "follow_up_log1p_mean": FOLLOW_UP_LOG1P_MEAN, "follow_up_log1p_sd": FOLLOW_UP_LOG1P_SD,
                "size_scale_px": SIZE_SCALE_PX, "pixel_spacing_scale_mm": PIXEL_SPACING_SCALE_MM,
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetadataFeatures:
        version = data.get("encoding_version", ENCODING_VERSION)
        if version != ENCODING_VERSION:
            raise ValueError(
                f"metadata encoding version {version} is not the one this code implements ({ENCODING_VERSION})"
            )
        if "features" not in data:
            raise ValueError("metadata features dict lacks 'features'")
        return cls(tuple(data["features"]))
