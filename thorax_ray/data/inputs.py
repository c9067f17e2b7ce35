"""The one input resolver: every input kind recognised once, on the driver, into one typed source
(`InputSource`) that training, scoring and evaluation consume. A prepared output's commit record is read
exactly once here and travels inside the source (readers of its shards get it from there), so a concurrent
`prepare --overwrite` can never mix two versions within one job.

Kinds (`InputSource.kind`):
* "prepared": a prepared output (`prepared.json`, `jobs/prepare.py`): rows from its committed version's
  manifest minus the images it quarantined (`prepared_quarantine`); images are read from its shards (already
  decoded, at its stored size);
* "dataset": a folder or s3:// prefix in one of the NIH layouts (a metadata CSV, see thorax_ray.data.locate);
* "folder": a folder or prefix of new files without a metadata CSV (scoring only);
* "manifest": a manifest Parquet file (`jobs/manifest.py` output); "list": any Parquet file with a `path`
  column (scoring only).

`resolve_dataset` (training, evaluation) accepts a prepared output or a dataset; its rows are the
manifest's. `resolve_input` (scoring's `--input`) accepts every kind; its rows have every
SCORING_ROW_COLUMNS column (null where unknown), one per input file:
* a folder: EVERY file under it, at any depth, is one row, named by its file name (`image_index`, extension
  included) and decoded by its content (PNG, JPEG, DICOM; anything else is quarantined as
  `unsupported_format` when it is read), except
  - the dataset files of the NIH layouts (metadata CSVs, BBox_List_2017.csv, split lists, the
    synthetic generator's record; `thorax_ray.data.locate.DATASET_FILE_PATTERNS`), and
  - hidden files: any path part starting with "." or "_" (`.DS_Store`, `_SUCCESS`), which are
    ignored and counted (`InputSource.ignored`).
  When the folder has a metadata CSV (Data_Entry_2017*.csv, sample_labels.csv or sample.csv within two
  levels, or the file named by `--metadata`), its rows come first, with their metadata, labels and
  `metadata_source` "csv" (rows whose image is missing stay, and are quarantined as `locate/missing`);
  files without a row follow with null metadata, unknown labels and `metadata_source` "none" (filled
  from the tags of DICOM files when they are read: "dicom"). Two files with one name are an error
  naming both;
* a manifest or list Parquet file: its rows;
* a prepared output: images it quarantined count as input rows and are quarantined again.
"""
from __future__ import annotations

import fnmatch
import logging
import posixpath
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from thorax_ray import storage
from thorax_ray.data.locate import BBOX_FILE, METADATA_PATTERNS, SYNTHETIC_RECORD, is_dataset_file
from thorax_ray.data.manifest import EXAMPLES, MANIFEST_COLUMNS, build_manifest, manifest_split, read_manifest
from thorax_ray.data.origin import prepared_origin
from thorax_ray.data.shards import read_commit, read_prepared_tables
from thorax_ray.data.splits import SplitConfig
from thorax_ray.labels import FINDING_COLUMNS
from thorax_ray.names import check_names

log = logging.getLogger(__name__)

SCORING_ROW_COLUMNS = (*MANIFEST_COLUMNS, "metadata_source")
PATIENT_METADATA = ("patient_id", "follow_up", "age_years", "sex", "view_position", "original_width",
                    "original_height", "pixel_spacing_x", "pixel_spacing_y")
"""The metadata columns of a row besides its name and split (a list Parquet with any of them has metadata)."""


class InputError(ValueError):
    pass


@dataclass(frozen=True)
class InputSource:
    """One input resolved once: what it is, its rows, and what was read to find them."""

    uri: str
    kind: str  # "dataset" | "folder" | "manifest" | "list" | "prepared"
    rows: pd.DataFrame
    has_labels: bool
    bbox_csv: str | None = None  # BBox_List_2017.csv of the dataset, when found
    prepared: dict | None = None  # the commit record of a prepared input (read once, when resolving)
    prepared_quarantine: pd.DataFrame | None = None  # image_index, path, stage, reason
    ignored: list[str] = field(default_factory=list)  # hidden files (a path part starting with . or _)
    data_origin: str = "real"  # "synthetic" for data made by thorax_ray.synthetic (thorax_ray.data.origin)
    split_hash: str | None = None  # of the rows' split column (None for inputs without one)
    split: dict | None = None  # how the rows were split (splits.split_record: kind, fractions, seed), when known

    @property
    def total_rows(self) -> int:
        """Input images, including those a prepared input had quarantined already."""
        extra = 0 if self.prepared_quarantine is None else len(self.prepared_quarantine)
        return len(self.rows) + extra

    @property
    def dataset_root(self) -> str:
        """The dataset folder the rows come from (a prepared output's source)."""
        return self.prepared["source"] if self.prepared else self.uri

    def describe(self) -> str:
        ignored = f", {len(self.ignored)} hidden files ignored" if self.ignored else ""
        return f"{self.kind} {self.uri} ({self.total_rows} images{ignored})"


def _depth(relative: str) -> int:
    return relative.count("/")


def _relative(path: str, base: str) -> str:
    return posixpath.relpath(path.replace("\\", "/"), base.replace("\\", "/"))


def _complete(rows: pd.DataFrame, metadata_source: str = "csv") -> pd.DataFrame:
    """Adds missing SCORING_ROW_COLUMNS as nulls (labels: NaN = unknown; `metadata_source` as given) and checks
    that image_index is unique (scores are keyed by it), naming both files of a collision."""
    rows = rows.copy()
    for column in SCORING_ROW_COLUMNS:
        if column not in rows.columns:
            rows[column] = (np.nan if column in FINDING_COLUMNS
                            else metadata_source if column == "metadata_source" else None)
    if rows["image_index"].isna().any():
        raise InputError("input rows without image_index")
    duplicated = rows["image_index"].duplicated(keep=False)
    if duplicated.any():
        clashes = rows.loc[duplicated].groupby("image_index", sort=True)["path"].apply(list)
        name, paths = next(iter(clashes.items()))
        raise InputError(
            f"{len(clashes)} image names occur more than once (scores are keyed by the file name): {name!r} is "
            f"{' and '.join(str(p) if p else '(a metadata row without image)' for p in paths[:2])}"
            + (f"; also {list(clashes.index[1:EXAMPLES])}" if len(clashes) > 1 else "")
            + "; rename one of each pair")
    rows["path"] = rows["path"].astype(object).where(rows["path"].notna(), None)
    return rows.reset_index(drop=True)


def sibling_bbox_list(source: str | None, endpoint_url: str | None) -> str | None:
    """BBox_List_2017.csv at the root of a dataset folder, if it is there (best effort)."""
    if not source:
        return None
    try:
        fs, base = storage.filesystem(source, endpoint_url=endpoint_url)
        candidate = f"{base}/{BBOX_FILE}"
        return storage.to_uri(fs, candidate) if fs.exists(candidate) else None
    except Exception:  # noqa: BLE001 - only used for overlays and evaluation's boxes
        return None


def resolve_dataset(uri: str, *, endpoint_url: str | None = None, split: SplitConfig | None = None) -> InputSource:
    """A prepared output (prepared.json; its split was made by prepare) or a dataset folder/prefix (its manifest,
    built now with `split`, default SplitConfig()), for training and evaluation; the errors of a dataset that is
    neither are thorax_ray.data.locate's."""
    record = read_commit(uri, endpoint_url=endpoint_url)
    if record is not None:
        return _prepared_input(uri, record, endpoint_url, scoring=False)
    manifest, summary = build_manifest(uri, split or SplitConfig(), endpoint_url=endpoint_url)
    return InputSource(uri, "dataset", manifest, has_labels=True, bbox_csv=sibling_bbox_list(uri, endpoint_url),
                       data_origin=summary.data_origin, split_hash=summary.split_hash, split=summary.split)


def resolve_input(uri: str, *, metadata_csv: str | None = None, endpoint_url: str | None = None) -> InputSource:
    """Resolves scoring's `--input` (see the module docstring); `metadata_csv` names the metadata CSV of a
    folder. Every image name is checked once here (it names overlay files later)."""
    found = _resolve_input(uri, metadata_csv=metadata_csv, endpoint_url=endpoint_url)
    check_names("image name", found.rows["image_index"], where=uri)
    return found


def _resolve_input(uri: str, *, metadata_csv: str | None = None, endpoint_url: str | None = None) -> InputSource:
    fs, base = storage.filesystem(uri, endpoint_url=endpoint_url)
    if not fs.exists(base):
        raise InputError(f"{uri}: input not found")
    if not fs.isdir(base):
        if metadata_csv:
            raise InputError(f"{uri}: --metadata applies to a folder input, not to a file")
        return _file_input(uri, fs, base, endpoint_url)
    record = read_commit(uri, endpoint_url=endpoint_url)
    if record is not None:
        if metadata_csv:
            raise InputError(f"{uri}: a prepared output carries its metadata; --metadata does not apply")
        return _prepared_input(uri, record, endpoint_url, scoring=True)
    return _folder_input(uri, fs, base, metadata_csv, endpoint_url)


def _folder_input(uri: str, fs, base: str, metadata_csv: str | None, endpoint_url: str | None) -> InputSource:
    relative = {_relative(p, base): p for p in fs.find(base) if not _relative(p, base).startswith("..")}
    hidden = sorted(rel for rel in relative if any(part.startswith(("_", ".")) for part in rel.split("/")))
    named = storage.filesystem(metadata_csv, endpoint_url=endpoint_url)[1] if metadata_csv else None
    files = {rel: storage.to_uri(fs, path) for rel, path in sorted(relative.items())
             if rel not in set(hidden) and not is_dataset_file(rel) and path != named}
    if hidden:
        log.info("%s: %d hidden files ignored (a path part starts with '.' or '_'), e.g. %s",
                 uri, len(hidden), hidden[:EXAMPLES])
    has_csv = metadata_csv is not None or any(
        _depth(rel) < 2 and fnmatch.fnmatch(posixpath.basename(rel), pattern)
        for rel in relative for pattern in METADATA_PATTERNS)
    table = pd.DataFrame(columns=list(SCORING_ROW_COLUMNS))
    bbox_csv = split_hash = split = None
    if has_csv:
        manifest, summary = build_manifest(uri, metadata_csv=metadata_csv, endpoint_url=endpoint_url)
        table, split_hash, split = _complete(manifest, "csv"), summary.split_hash, summary.split
        boxes = sorted((_depth(rel), rel) for rel in relative
                       if _depth(rel) < 2 and posixpath.basename(rel) == BBOX_FILE)
        bbox_csv = storage.to_uri(fs, relative[boxes[0][1]]) if boxes else None
    others = _files_without_row(table, files)
    if not len(table) and not others:
        raise InputError(f"{uri}: no files to score (hidden files ignored: {len(hidden)})")
    unlisted = _complete(pd.DataFrame(others, columns=["image_index", "path"]), "none")
    rows = pd.concat([frame for frame in (table, unlisted) if len(frame)], ignore_index=True)
    return InputSource(uri, "dataset" if has_csv else "folder", _complete(rows), has_labels=has_csv,
                       bbox_csv=bbox_csv, ignored=[storage.to_uri(fs, relative[rel]) for rel in hidden],
                       data_origin="synthetic" if SYNTHETIC_RECORD in relative else "real", split_hash=split_hash,
                       split=split)


def _files_without_row(table: pd.DataFrame, files: dict[str, str]) -> list[tuple[str, str]]:
    """(name, URI) of the files no metadata row points at. A row whose image the dataset layout did not
    find (deeper, or with another extension) gets the file of its name when exactly one has it."""
    used = set(table["path"].dropna())
    spare: dict[str, list[str]] = {}
    for path in files.values():
        if path not in used:
            spare.setdefault(posixpath.basename(path.split("://", 1)[-1]), []).append(path)
    if len(table):
        missing = table["path"].isna()
        for i in table.index[missing]:
            found = spare.get(table.at[i, "image_index"], [])
            if len(found) == 1:
                table.at[i, "path"] = found.pop()
    return [(name, path) for name, paths in sorted(spare.items()) for path in paths]


def _file_input(uri: str, fs, path: str, endpoint_url: str | None) -> InputSource:
    if not path.lower().endswith(".parquet"):
        raise InputError(f"{uri}: is a file; expected a folder of images (PNG, JPEG, DICOM), a dataset folder, "
                         "a manifest Parquet file or a prepared output")

    with fs.open(path, "rb") as handle:
        schema = pq.read_schema(handle)
    if set(MANIFEST_COLUMNS) <= set(schema.names):
        manifest, info = read_manifest(uri, endpoint_url=endpoint_url)
        return InputSource(uri, "manifest", _complete(manifest), has_labels=True,
                           bbox_csv=sibling_bbox_list(info.get("source"), endpoint_url),
                           data_origin=info.get("data_origin") or "real", split_hash=info.get("split_hash"),
                           split=manifest_split(info))
    if "path" not in schema.names:
        raise InputError(f"{uri}: neither a thorax-ray manifest nor a table with a `path` column")
    rows = storage.read_parquet(uri, endpoint_url=endpoint_url)
    if "image_index" not in rows.columns:
        rows["image_index"] = [posixpath.basename(str(p).replace("\\", "/")) if p else None for p in rows["path"]]
    keep = [c for c in rows.columns if c in MANIFEST_COLUMNS]
    has_labels = all(c in rows.columns for c in FINDING_COLUMNS)
    source = "csv" if any(c in rows.columns for c in PATIENT_METADATA) else "none"
    return InputSource(uri, "list", _complete(rows[keep], source), has_labels=has_labels)


def _prepared_input(uri: str, record: dict, endpoint_url: str | None, *, scoring: bool) -> InputSource:
    """The committed version of a prepared output, from its commit record (read once by the caller): its
    usable rows (as scoring rows when `scoring`, else the manifest's) and what it quarantined."""
    manifest, info, quarantine = read_prepared_tables(uri, record, endpoint_url=endpoint_url)
    usable = manifest[~manifest["image_index"].isin(quarantine["image_index"])]
    if scoring:
        log.info("prepared input %s: %d images in shards (size %d), %d quarantined by prepare",
                 uri, len(usable), record["size"], len(quarantine))
    return InputSource(uri, "prepared", _complete(usable) if scoring else usable.reset_index(drop=True),
                       has_labels=True, prepared=record, prepared_quarantine=quarantine.reset_index(drop=True),
                       bbox_csv=sibling_bbox_list(record.get("source") or info.get("source"), endpoint_url),
                       data_origin=prepared_origin(uri, record, info, endpoint_url=endpoint_url),
                       split_hash=record["split_hash"], split=manifest_split(info))
