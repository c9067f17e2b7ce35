"""The manifest: one row per metadata row with its image path, labels and patient-level split.

Built once per dataset (one listing of storage) and read by every later job."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from thorax_ray import storage
from thorax_ray.data.locate import DatasetFiles, discover, read_name_list
from thorax_ray.data.nih_csv import MetadataTable, read_metadata
from thorax_ray.data.splits import (SPLIT_KINDS, SPLITS, SplitConfig, assign_splits, check_patient_disjoint,
                                    check_required_splits, split_hash, split_record)
from thorax_ray.labels import FINDING_COLUMNS

log = logging.getLogger(__name__)

MANIFEST_COLUMNS: tuple[str, ...] = (
    "image_index", "patient_id", "follow_up", "age_years", "sex", "view_position", "path", "split",
    "finding_labels", "original_width", "original_height", "pixel_spacing_x", "pixel_spacing_y",
    *FINDING_COLUMNS,
)
MANIFEST_SCHEMA = pa.schema([
    ("image_index", pa.string()), ("patient_id", pa.int64()), ("follow_up", pa.int64()),
    ("age_years", pa.float64()), ("sex", pa.string()), ("view_position", pa.string()), ("path", pa.string()),
    ("split", pa.string()), ("finding_labels", pa.string()), ("original_width", pa.int64()),
    ("original_height", pa.int64()), ("pixel_spacing_x", pa.float64()), ("pixel_spacing_y", pa.float64()),
    *[(column, pa.uint8()) for column in FINDING_COLUMNS],
])
"""Column types of the manifest (and of the metadata columns of prepared shards), fixed so that a
block where a column happens to be all-null still has the same schema as every other block."""
METADATA_KEY = b"thorax_ray"
EXAMPLES = 5


class ManifestError(ValueError):
    pass


@dataclass
class ManifestSummary:
    source: str
    metadata_csv: str
    rows: int
    patients: int
    images_found: int
    missing_images: int
    missing_examples: list[str]
    orphan_images: int
    orphan_examples: list[str]
    impossible_ages: int
    missing_ages: int
    unknown_sex: int
    unknown_view_position: int
    split_source: str
    split_hash: str
    data_origin: str = "real"  # "synthetic" when the dataset carries thorax_ray.synthetic's record
    split: dict = field(default_factory=dict)  # splits.split_record: kind, requested kind, fractions, seed
    split_rows: dict[str, int] = field(default_factory=dict)
    split_patients: dict[str, int] = field(default_factory=dict)
    finding_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> finding -> positives

    def format(self) -> str:
        lines = [
            f"dataset          {self.source}",
            f"metadata         {self.metadata_csv}",
            f"rows             {self.rows}",
            f"patients         {self.patients}",
            f"images found     {self.images_found}",
            f"missing images   {self.missing_images}" + (f"  e.g. {', '.join(self.missing_examples)}" if self.missing_images else ""),
            f"images w/o row   {self.orphan_images}" + (f"  e.g. {', '.join(self.orphan_examples)}" if self.orphan_images else ""),
            f"impossible ages  {self.impossible_ages} (kept as missing; {self.missing_ages} ages missing in all)",
            f"unknown sex      {self.unknown_sex}",
            f"unknown view     {self.unknown_view_position}",
            f"split            {self.split_source}, hash {self.split_hash}",
            f"data origin      {self.data_origin}",
        ]
        if self.images_found == 0:
            lines.append("NOTE: no images at all: a metadata-only dataset (the metadata network can train on it)")
        header = f"{'finding':<20}" + "".join(f"{s:>8}" for s in SPLITS)
        lines += ["", header, f"{'rows':<20}" + "".join(f"{self.split_rows.get(s, 0):>8}" for s in SPLITS),
                  f"{'patients':<20}" + "".join(f"{self.split_patients.get(s, 0):>8}" for s in SPLITS)]
        for column in FINDING_COLUMNS:
            lines.append(f"{column:<20}" + "".join(f"{self.finding_counts.get(s, {}).get(column, 0):>8}" for s in SPLITS))
        return "\n".join(lines)


def build_manifest(
    data: str, split_config: SplitConfig = SplitConfig(), *, metadata_csv: str | None = None,
    endpoint_url: str | None = None,
) -> tuple[pd.DataFrame, ManifestSummary]:
    """Validates a dataset and returns its manifest and a summary of what was found; `metadata_csv`
    names the metadata file (default: found by its usual names, see thorax_ray.data.locate)."""
    files = discover(data, metadata_csv=metadata_csv, endpoint_url=endpoint_url)
    table = read_metadata(files.metadata_csv, endpoint_url=endpoint_url)
    if table.frame.empty:
        raise ManifestError(f"{files.metadata_csv}: no data rows (only a header); nothing to build a manifest of")
    frame = table.frame.copy()
    frame["path"] = frame["image_index"].map(files.images).astype(object)
    frame["path"] = frame["path"].where(frame["path"].notna(), None)

    split_source, lists = _split_lists(files, endpoint_url, split_config)
    frame["split"] = assign_splits(frame, split_config, **lists)
    check_patient_disjoint(frame)
    check_required_splits(frame, split_config, source=data)
    frame = frame[list(MANIFEST_COLUMNS)]
    summary = _summarise(frame, files, table, split_source)
    summary.split = split_record(split_config, official_lists=bool(lists))
    return frame, summary


def _split_lists(files: DatasetFiles, endpoint_url: str | None, config: SplitConfig) -> tuple[str, dict]:
    """(how the split was made, the official lists for assign_splits: none for a random split)."""
    has_lists = files.test_list is not None or files.train_val_list is not None
    if config.kind == "random" and has_lists:
        log.info("--split random: the dataset's official split lists are ignored")
        return (f"random patient split (val {config.val_fraction}, test {config.test_fraction}, seed {config.seed}; "
                "official lists ignored)"), {}
    if not has_lists:
        return "patient hash", {}
    lists = {
        "test_names": read_name_list(files.test_list, endpoint_url=endpoint_url) if files.test_list else set(),
        "train_val_names": read_name_list(files.train_val_list, endpoint_url=endpoint_url) if files.train_val_list else set(),
    }
    return "official lists (validation carved by patient)", lists


def _summarise(frame: pd.DataFrame, files: DatasetFiles, table: MetadataTable, split_source: str) -> ManifestSummary:
    missing = frame.loc[frame["path"].isna(), "image_index"]
    orphans = sorted(set(files.images) - set(frame["image_index"]))
    found = int(frame["path"].notna().sum())
    if len(missing) and found:
        log.warning("%d metadata rows have no image, e.g. %s", len(missing), list(missing[:EXAMPLES]))
    if orphans:
        log.warning("%d images have no metadata row, e.g. %s", len(orphans), orphans[:EXAMPLES])
    by_split = frame.groupby("split")
    return ManifestSummary(
        source=files.root,
        metadata_csv=files.metadata_csv,
        rows=len(frame),
        patients=int(frame["patient_id"].nunique()),
        images_found=found,
        missing_images=len(missing),
        missing_examples=list(missing[:EXAMPLES]),
        orphan_images=len(orphans),
        orphan_examples=orphans[:EXAMPLES],
        impossible_ages=table.impossible_ages,
        missing_ages=int(frame["age_years"].isna().sum()),
        unknown_sex=table.unknown_sex,
        unknown_view_position=table.unknown_view_position,
        split_source=split_source,
        split_hash=split_hash(frame["image_index"], frame["split"]),
        data_origin="synthetic" if files.synthetic else "real",
        split_rows={s: int(n) for s, n in by_split.size().items()},
        split_patients={s: int(n) for s, n in by_split["patient_id"].nunique().items()},
        finding_counts={s: {c: int(v) for c, v in g[list(FINDING_COLUMNS)].sum().items()} for s, g in by_split},
    )


def write_manifest(frame: pd.DataFrame, uri: str, summary: ManifestSummary, *, endpoint_url: str | None = None) -> None:
    """Writes the manifest Parquet with the split hash and source in its schema metadata (one PUT / rename)."""
    table = pa.Table.from_pandas(frame[list(MANIFEST_COLUMNS)], schema=MANIFEST_SCHEMA, preserve_index=False)
    info = {"split_hash": summary.split_hash, "source": summary.source, "split_source": summary.split_source,
            "data_origin": summary.data_origin, "split": summary.split}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: json.dumps(info).encode()})
    fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
    parent = path.rsplit("/", 1)[0] if "/" in path else path
    fs.makedirs(parent, exist_ok=True)
    if storage.is_remote(uri):
        with fs.open(path, "wb") as handle:
            pq.write_table(table, handle)
    else:
        temporary = f"{path}.tmp"
        with fs.open(temporary, "wb") as handle:
            pq.write_table(table, handle)
        fs.mv(temporary, path)


def read_manifest(uri: str, *, endpoint_url: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Returns the manifest frame and its stored info ({"split_hash", "source", "data_origin", ...};
    manifests written before data_origin was recorded lack that key)."""
    fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
    if not fs.exists(path):
        raise ManifestError(f"{uri}: manifest not found")
    with fs.open(path, "rb") as handle:
        table = pq.read_table(handle)
    missing = set(MANIFEST_COLUMNS) - set(table.column_names)
    if missing:
        raise ManifestError(f"{uri}: not a thorax-ray manifest, missing columns {sorted(missing)}")
    info = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"{}"))
    return table.to_pandas(), info


def manifest_split(info: dict) -> dict:
    """Which kind of split a manifest's rows have, from read_manifest's info: splits.split_record's dict
    ({"kind": "official" | "random", "requested", "val_fraction", "test_fraction", "seed"}). Manifests
    written before it was recorded give the kind their `split_source` names and None for the rest;
    {"kind": None, ...} when even that is missing."""
    record = info.get("split")
    if isinstance(record, dict) and record.get("kind") in SPLIT_KINDS:
        return dict(record)
    source = str(info.get("split_source") or "")
    kind = "official" if source.startswith("official") else "random" if source else None
    return {"kind": kind, "requested": None, "val_fraction": None, "test_fraction": None, "seed": None}
