"""What `--input` can be, resolved once on the driver into one row per input image.

* a folder or s3:// prefix in any NIH layout (Data_Entry_2017*.csv or sample_labels.csv within two
  levels): the manifest of `thorax_ray.manifest.build_manifest` (metadata, labels, image paths; rows
  whose image is missing stay, and are quarantined as `locate/missing`);
* a folder or prefix of new PNGs with no metadata CSV: every `*.png` up to three levels deep, named by
  its file name (`image_index`), with null metadata and unknown labels;
* a manifest Parquet file (`jobs/manifest.py` output), or any Parquet file with a `path` column;
* a prepared output (`prepared.json`, `jobs/prepare.py`): images are read from its shards (already
  decoded, at its stored size); images it quarantined count as input rows and are quarantined again.
"""
from __future__ import annotations

import fnmatch
import logging
import posixpath
from dataclasses import dataclass

import numpy as np
import pandas as pd

from thorax_ray import storage
from thorax_ray.data.shards import read_commit
from thorax_ray.labels import FINDING_COLUMNS
from thorax_ray.locate import MAX_IMAGE_DEPTH, METADATA_PATTERNS
from thorax_ray.manifest import MANIFEST_COLUMNS, build_manifest, read_manifest
from thorax_ray.names import check_names

log = logging.getLogger(__name__)

BBOX_FILE = "BBox_List_2017.csv"
EXAMPLES = 5


class InputError(ValueError):
    pass


@dataclass
class ScoringInput:
    """The resolved input: `rows` has every MANIFEST_COLUMNS column (null where unknown)."""

    uri: str
    kind: str  # "dataset" | "folder" | "manifest" | "list" | "prepared"
    rows: pd.DataFrame
    has_labels: bool
    bbox_csv: str | None = None
    prepared: dict | None = None  # commit record of a prepared input
    prepared_quarantine: pd.DataFrame | None = None  # image_index, path, stage, reason

    @property
    def total_rows(self) -> int:
        """Input images, including those a prepared input had quarantined already."""
        extra = 0 if self.prepared_quarantine is None else len(self.prepared_quarantine)
        return len(self.rows) + extra

    def describe(self) -> str:
        return f"{self.kind} {self.uri} ({self.total_rows} images)"


def _depth(relative: str) -> int:
    return relative.count("/")


def _relative(path: str, base: str) -> str:
    return posixpath.relpath(path.replace("\\", "/"), base.replace("\\", "/"))


def _complete(rows: pd.DataFrame) -> pd.DataFrame:
    """Adds missing MANIFEST_COLUMNS as nulls (labels: NaN = unknown) and checks image_index."""
    rows = rows.copy()
    for column in MANIFEST_COLUMNS:
        if column not in rows.columns:
            rows[column] = np.nan if column in FINDING_COLUMNS else None
    if rows["image_index"].isna().any():
        raise InputError("input rows without image_index")
    duplicated = rows.loc[rows["image_index"].duplicated(), "image_index"]
    if len(duplicated):
        raise InputError(f"{len(duplicated)} image names occur more than once (scores are keyed by image_index), "
                         f"e.g. {list(duplicated[:EXAMPLES])}")
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
    except Exception:  # noqa: BLE001 - only used for overlays
        return None


def resolve_input(uri: str, *, endpoint_url: str | None = None) -> ScoringInput:
    """The input's rows; every image name is checked once here (it names overlay files later)."""
    found = _resolve_input(uri, endpoint_url=endpoint_url)
    check_names("image name", found.rows["image_index"], where=uri)
    return found


def _resolve_input(uri: str, *, endpoint_url: str | None = None) -> ScoringInput:
    fs, base = storage.filesystem(uri, endpoint_url=endpoint_url)
    if not fs.exists(base):
        raise InputError(f"{uri}: input not found")
    if not fs.isdir(base):
        return _file_input(uri, fs, base, endpoint_url)
    record = read_commit(uri, endpoint_url=endpoint_url)
    if record is not None:
        return _prepared_input(uri, record, endpoint_url)
    listing = [p for p in fs.find(base) if not _relative(p, base).startswith("..")]
    relative = {_relative(p, base): p for p in listing}
    if any(_depth(rel) < 2 and fnmatch.fnmatch(posixpath.basename(rel), pattern)
           for rel in relative for pattern in METADATA_PATTERNS):
        manifest, _ = build_manifest(uri, endpoint_url=endpoint_url)
        boxes = sorted((_depth(rel), rel) for rel in relative
                       if _depth(rel) < 2 and posixpath.basename(rel) == BBOX_FILE)
        bbox_csv = storage.to_uri(fs, relative[boxes[0][1]]) if boxes else None
        return ScoringInput(uri, "dataset", _complete(manifest), has_labels=True, bbox_csv=bbox_csv)
    images = sorted((posixpath.basename(rel), storage.to_uri(fs, path)) for rel, path in relative.items()
                    if _depth(rel) < MAX_IMAGE_DEPTH and rel.lower().endswith(".png")
                    and not any(part.startswith(("_", ".")) for part in rel.split("/")))
    if not images:
        raise InputError(f"{uri}: no PNG images and no Data_Entry_2017.csv / sample_labels.csv "
                         f"(looked {MAX_IMAGE_DEPTH} levels deep)")
    rows = pd.DataFrame(images, columns=["image_index", "path"])
    return ScoringInput(uri, "folder", _complete(rows), has_labels=False)


def _file_input(uri: str, fs, path: str, endpoint_url: str | None) -> ScoringInput:
    if not path.lower().endswith(".parquet"):
        raise InputError(f"{uri}: is a file; expected a folder of PNGs, a dataset folder, a manifest "
                         "Parquet file or a prepared output")
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as handle:
        schema = pq.read_schema(handle)
    if set(MANIFEST_COLUMNS) <= set(schema.names):
        manifest, info = read_manifest(uri, endpoint_url=endpoint_url)
        return ScoringInput(uri, "manifest", _complete(manifest), has_labels=True,
                            bbox_csv=sibling_bbox_list(info.get("source"), endpoint_url))
    if "path" not in schema.names:
        raise InputError(f"{uri}: neither a thorax-ray manifest nor a table with a `path` column")
    rows = storage.read_parquet(uri, endpoint_url=endpoint_url)
    if "image_index" not in rows.columns:
        rows["image_index"] = [posixpath.basename(str(p).replace("\\", "/")) if p else None for p in rows["path"]]
    keep = [c for c in rows.columns if c in MANIFEST_COLUMNS]
    has_labels = all(c in rows.columns for c in FINDING_COLUMNS)
    return ScoringInput(uri, "list", _complete(rows[keep]), has_labels=has_labels)


def _prepared_input(uri: str, record: dict, endpoint_url: str | None) -> ScoringInput:
    manifest, info = read_manifest(storage.join(uri, "manifest.parquet"), endpoint_url=endpoint_url)
    quarantine = storage.read_parquet(storage.join(uri, "quarantine.parquet"), endpoint_url=endpoint_url)
    quarantine = quarantine.reindex(columns=["image_index", "path", "stage", "reason"])
    usable = manifest[~manifest["image_index"].isin(quarantine["image_index"])]
    log.info("prepared input %s: %d images in shards (size %d), %d quarantined by prepare",
             uri, len(usable), record["size"], len(quarantine))
    return ScoringInput(uri, "prepared", _complete(usable), has_labels=True, prepared=record,
                        prepared_quarantine=quarantine.reset_index(drop=True),
                        bbox_csv=sibling_bbox_list(record.get("source") or info.get("source"), endpoint_url))

