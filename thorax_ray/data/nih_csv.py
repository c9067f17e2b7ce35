"""Readers for the NIH metadata files: Data_Entry_2017.csv (both revisions), sample_labels.csv (also
met as sample.csv), exports of them with other header spellings, and BBox_List_2017.csv. Everything
is normalised here, once: ages in years, sex as M/F/None, view position as PA/AP/other/None, labels
as 0/1 columns in FINDINGS order.

Headers are matched by name, not by position: each name is compared with case, spaces and punctuation
removed (`Original Image Pixel Spacing y` = `OriginalImagePixelSpacing_y`), a bracketed pair such as
`OriginalImagePixelSpacing[x,y]` names two columns, and COLUMN_ALIASES lists the accepted spellings.
`Image Index`, `Finding Labels` and `Patient ID` are required; the other columns may be absent (their
values are then missing). Columns with other names are ignored; two columns that mean the same thing
are an error naming both."""
from __future__ import annotations

import csv
import io
import logging
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from thorax_ray import storage
from thorax_ray.labels import FINDING_COLUMNS, normalise_bbox_label, parse_finding_labels
from thorax_ray.names import UnsafeNameError, safe_name

log = logging.getLogger(__name__)

DATA_ENTRY_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
SAMPLE_LABELS_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImageWidth,OriginalImageHeight,OriginalImagePixelSpacing_x,OriginalImagePixelSpacing_y"
)
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"

_RAW_COLUMNS = (
    "image_index", "finding_labels", "follow_up", "patient_id", "age", "sex", "view_position",
    "original_width", "original_height", "pixel_spacing_x", "pixel_spacing_y",
)
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    # column -> accepted header names, compared lower-case with everything but letters and digits removed
    "image_index": ("imageindex", "imagename", "image"),
    "finding_labels": ("findinglabels", "findings", "labels"),
    "follow_up": ("followup", "followupnumber"),
    "patient_id": ("patientid",),
    "age": ("patientage", "age"),
    "sex": ("patientgender", "patientsex", "gender", "sex"),
    "view_position": ("viewposition", "view"),
    "original_width": ("originalimagewidth", "originalwidth", "imagewidth"),
    "original_height": ("originalimageheight", "originalheight", "imageheight"),
    "pixel_spacing_x": ("originalimagepixelspacingx", "pixelspacingx"),
    "pixel_spacing_y": ("originalimagepixelspacingy", "pixelspacingy"),
}
REQUIRED_COLUMNS = ("image_index", "finding_labels", "patient_id")
_TITLES = {"image_index": "Image Index", "finding_labels": "Finding Labels", "patient_id": "Patient ID"}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([YMDymd]?)\s*$")
# Years per unit of an age: the CSVs' (`058Y`, `011M`, `007D`, or a bare number of years) and DICOM's Age
# String (`nnnD/W/M/Y`, thorax_ray.data.dicom). Ages above MAX_AGE_YEARS are impossible.
AGE_UNIT_YEARS = {"Y": 1.0, "M": 1.0 / 12.0, "W": 7.0 / 365.25, "D": 1.0 / 365.25}
MAX_AGE_YEARS = 120.0


class MetadataError(ValueError):
    """A metadata file that cannot be read; the message names the file and row."""


@dataclass
class MetadataTable:
    """The normalised metadata of one dataset and what was found wrong but kept."""

    frame: pd.DataFrame
    source: str
    layout: str  # "data_entry", "sample_labels" or "variant" (other header spellings)
    impossible_ages: int = 0
    missing_ages: int = 0
    unknown_sex: int = 0
    unknown_view_position: int = 0


def parse_age(text: str | float | int | None) -> float | None:
    """`57` -> 57.0, `058Y` -> 58.0, `011M` -> 0.9167, `007D` -> 0.0192; empty -> None.

    Raises ValueError for text that is not an age at all. Range checks are the caller's job.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    text = str(text)
    if not text.strip():
        return None
    match = _AGE.match(text)
    if not match:
        raise ValueError(f"not an age: {text!r}")
    return float(match.group(1)) * AGE_UNIT_YEARS[match.group(2).upper() or "Y"]


def check_image_index(name: str, *, source: str, row: int) -> None:
    """An `Image Index` is joined to storage paths, so it must be a plain file name (thorax_ray.names)."""
    try:
        safe_name("'Image Index'", name, where=f"{source}, row {row}")
    except UnsafeNameError as error:
        raise MetadataError(str(error)) from None


def read_metadata(uri: str, *, endpoint_url: str | None = None) -> MetadataTable:
    """Reads Data_Entry_2017.csv (with or without trailing empty column), sample_labels.csv or a variant."""
    fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
    if not fs.exists(path):
        raise MetadataError(f"{uri}: metadata file not found")
    return parse_metadata_text(storage.read_text(uri, endpoint_url=endpoint_url), source=uri)


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def header_names(fields: list[str]) -> list[str]:
    """Header fields (as a CSV reader splits them) -> one name per data column: a bracketed group that
    the reader split at its commas (`OriginalImage[Width`, `Height]`) becomes `OriginalImageWidth`,
    `OriginalImageHeight`."""
    names, i = [], 0
    while i < len(fields):
        field = fields[i]
        if "[" in field:
            group = [field]
            while "]" not in group[-1] and i + 1 < len(fields):
                i += 1
                group.append(fields[i])
            prefix, _, first = ",".join(group).partition("[")
            names += [prefix + part for part in first.rstrip().rstrip("]").split(",")]
        else:
            names.append(field)
        i += 1
    return names


def match_header(names: list[str], *, source: str) -> dict[str, int]:
    """Column -> position of the header names that COLUMN_ALIASES recognise; MetadataError when a
    required column is missing or two names mean the same column."""
    lookup = {alias: column for column, aliases in COLUMN_ALIASES.items() for alias in aliases}
    found: dict[str, int] = {}
    for position, name in enumerate(names):
        column = lookup.get(_squash(name))
        if column is None:
            continue
        if column in found:
            raise MetadataError(f"{source}, row 1: ambiguous header: {names[found[column]]!r} and {name!r} "
                                f"both name the column {column}")
        found[column] = position
    missing = [_TITLES[c] for c in REQUIRED_COLUMNS if c not in found]
    if missing:
        raise MetadataError(
            f"{source}, row 1: unrecognised header {','.join(names)[:200]!r}; missing columns "
            f"{', '.join(missing)} (expected the header of Data_Entry_2017.csv or sample_labels.csv, or a "
            "variant of it)")
    return found


def parse_metadata_text(text: str, *, source: str) -> MetadataTable:
    rows = list(csv.reader(io.StringIO(text)))
    header = text.split("\n", 1)[0].strip().rstrip(",").strip()
    layout = {DATA_ENTRY_HEADER: "data_entry", SAMPLE_LABELS_HEADER: "sample_labels"}.get(header, "variant")
    names = header_names(rows[0] if rows else [])
    while names and not names[-1].strip():
        names.pop()  # the 2017 file's trailing comma
    positions = match_header(names, source=source)
    records = []
    for offset, fields in enumerate(rows[1:]):
        line = offset + 2
        if not fields or all(not f.strip() for f in fields):
            continue
        extra = fields[len(names):]
        if len(fields) < len(names) or any(f.strip() for f in extra):
            raise MetadataError(
                f"{source}, row {line}: expected {len(names)} fields "
                f"(plus an optional empty one), got {len(fields)}"
            )
        records.append([line, *(fields[positions[c]] if c in positions else "" for c in _RAW_COLUMNS)])
    raw = pd.DataFrame(records, columns=["line", *_RAW_COLUMNS]).astype({c: object for c in _RAW_COLUMNS})
    return _normalise(raw, source=source, layout=layout, present=set(positions))


def _normalise(raw: pd.DataFrame, *, source: str, layout: str, present: set[str]) -> MetadataTable:
    lines = raw["line"].to_numpy()
    _check_names(raw, lines, source)
    frame = pd.DataFrame({"image_index": raw["image_index"].astype(str)})
    frame["finding_labels"] = raw["finding_labels"].str.strip()
    frame["patient_id"] = _integers(raw, "patient_id", "Patient ID", source)
    frame["follow_up"] = (_integers(raw, "follow_up", "Follow-up #", source) if "follow_up" in present
                          else pd.array([pd.NA] * len(raw), dtype="Int64"))
    frame["age_years"], missing_ages, impossible_ages = _ages(raw, lines, source)

    sex = raw["sex"].str.strip().str.upper().map({"M": "M", "MALE": "M", "F": "F", "FEMALE": "F"})
    unknown_sex = int(sex.isna().sum())
    frame["sex"] = sex.astype(object).where(sex.notna(), None)

    view = raw["view_position"].str.strip().str.upper()
    view = view.where(view.isin(["PA", "AP"]) | (view == ""), "other").replace("", None)
    unknown_view = int((~view.isin(["PA", "AP"])).sum())
    frame["view_position"] = view.astype(object).where(view.notna(), None)

    for column in ("original_width", "original_height"):
        frame[column] = pd.to_numeric(raw[column].str.strip().replace("", None), errors="coerce").astype("Int64")
    for column in ("pixel_spacing_x", "pixel_spacing_y"):
        frame[column] = pd.to_numeric(raw[column].str.strip().replace("", None), errors="coerce").astype("float64")
    labels = _label_matrix(frame["finding_labels"], lines, source)
    for j, column in enumerate(FINDING_COLUMNS):
        frame[column] = labels[:, j]

    if unknown_sex or unknown_view:
        log.warning("%s: %d rows with unknown sex, %d with unknown view position (kept as missing/'other')",
                    source, unknown_sex, unknown_view)
    return MetadataTable(
        frame=frame.reset_index(drop=True),
        source=source,
        layout=layout,
        impossible_ages=impossible_ages,
        missing_ages=missing_ages,
        unknown_sex=unknown_sex,
        unknown_view_position=unknown_view,
    )


def _check_names(raw: pd.DataFrame, lines: np.ndarray, source: str) -> None:
    """Every 'Image Index' a safe file name, and none twice."""
    for name, line in zip(raw["image_index"], lines):
        check_image_index(name, source=source, row=int(line))
    duplicated = raw["image_index"].duplicated(keep=False)
    if duplicated.any():
        dups = raw.loc[duplicated, ["image_index", "line"]]
        first = dups.groupby("image_index")["line"].apply(list).head(3)
        detail = "; ".join(f"{name} at rows {rows}" for name, rows in first.items())
        raise MetadataError(f"{source}: {dups['image_index'].nunique()} duplicate 'Image Index' values: {detail}")


def _ages(raw: pd.DataFrame, lines: np.ndarray, source: str) -> tuple[np.ndarray, int, int]:
    """(ages in years, NaN where missing or impossible; missing count; impossible count)."""
    ages = []
    for value, line in zip(raw["age"], lines):
        try:
            ages.append(parse_age(value))
        except ValueError as error:
            raise MetadataError(f"{source}, row {line}: 'Patient Age' {error}") from None
    ages = np.array([np.nan if a is None else a for a in ages], dtype=np.float64)
    missing_ages = int(np.isnan(ages).sum())
    impossible = (ages < 0) | (ages > MAX_AGE_YEARS)
    if impossible.any():
        examples = ", ".join(f"row {l}: {v!r}" for l, v in zip(lines[impossible][:5], raw["age"][impossible][:5]))
        log.warning("%s: %d impossible ages (<0 or >%g years) treated as missing (%s)",
                    source, int(impossible.sum()), MAX_AGE_YEARS, examples)
        ages[impossible] = np.nan
    return ages, missing_ages, int(impossible.sum())


def _label_matrix(texts: pd.Series, lines: np.ndarray, source: str) -> np.ndarray:
    """(rows, 14) uint8 from the 'Finding Labels' texts (each distinct text parsed once)."""
    labels = np.zeros((len(texts), len(FINDING_COLUMNS)), dtype=np.uint8)
    parsed: dict[str, np.ndarray] = {}
    for i, (text, line) in enumerate(zip(texts, lines)):
        vector = parsed.get(text)
        if vector is None:
            vector = parsed[text] = parse_finding_labels(text, source=source, row=int(line))
        labels[i] = vector
    return labels


def _integers(raw: pd.DataFrame, column: str, title: str, source: str) -> np.ndarray:
    values = pd.to_numeric(raw[column].str.strip(), errors="coerce")
    bad = values.isna() | (values != values.round()) | (values < 0)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise MetadataError(f"{source}, row {raw['line'].iloc[i]}: '{title}' {raw[column].iloc[i]!r} is not a whole number")
    return values.astype(np.int64).to_numpy()


def read_bbox_list(uri: str, *, endpoint_url: str | None = None) -> pd.DataFrame:
    """Reads BBox_List_2017.csv into columns image_index, finding (FINDINGS spelling), x, y, w, h."""
    lines = storage.read_text(uri, endpoint_url=endpoint_url).splitlines()
    if not lines or lines[0].strip() != BBOX_HEADER:
        raise MetadataError(f"{uri}, row 1: unrecognised header; expected {BBOX_HEADER!r}")
    records = []
    for line, fields in enumerate(csv.reader(io.StringIO("\n".join(lines[1:]))), start=2):
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) < 6 or any(f.strip() for f in fields[6:]):
            raise MetadataError(f"{uri}, row {line}: expected 6 fields (image, label, x, y, w, h), got {len(fields)}")
        check_image_index(fields[0], source=uri, row=line)
        finding = normalise_bbox_label(fields[1], source=uri, row=line)
        try:
            x, y, w, h = (float(v) for v in fields[2:6])
        except ValueError:
            raise MetadataError(f"{uri}, row {line}: box {fields[2:6]} is not numeric") from None
        if w <= 0 or h <= 0:
            raise MetadataError(f"{uri}, row {line}: box has non-positive width/height {w}x{h}")
        records.append((fields[0], finding, x, y, w, h))
    return pd.DataFrame(records, columns=["image_index", "finding", "x", "y", "w", "h"])
