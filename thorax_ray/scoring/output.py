"""The scoring output: Parquet schema and metadata, atomic per-run commits, the already-scored index,
the quarantine table and the readers.

Layout of an output `OUT/` (local folder or s3:// prefix):

    OUT/_commits/<run_id>.json                                   commit record of a run, written last
    OUT/scores/batch_date=YYYY-MM-DD/run_id=<run_id>/part-*.parquet       one row per scored image
    OUT/quarantine/batch_date=YYYY-MM-DD/run_id=<run_id>/part-0.parquet   images a run could not score
    OUT/_staging/<run_id>/...                                    files of a run that is still writing
    OUT/_lock.json                                               lease of the run writing now (thorax_ray.lease)

The staging, the lease and the commit go through the data stage's staged-output helper
(thorax_ray.data.staged), which prepare uses as well.

A run writes its files under `_staging/<run_id>/`, moves them to their partition folders when every
image is done, and then writes `_commits/<run_id>.json` (one PUT on object stores, write + rename on
local disks) listing them. Readers (`read_scores`, `read_quarantine`, `scored_index`) read only files
listed in commit records, so files of a run that died (anywhere before its commit record) are never
read; Hive-style readers skip `_staging` and `_commits` (leading underscore) by convention. A run holds
OUT's lease from reading the already-scored index until its commit, so two runs never score one image
twice; `read_scores` still keeps one row per (image_index, model_id), the earliest committed, should two
commits ever overlap (e.g. outputs written by older versions).
"""
from __future__ import annotations

import calendar
import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from thorax_ray import storage
from thorax_ray.attribution import BOXES_TYPE, HEATMAP_METADATA_KEY
from thorax_ray.data.quarantine import QUARANTINE_COLUMNS
from thorax_ray.data.staged import RUN_ID_TIME
from thorax_ray.labels import FINDING_COLUMNS, FINDINGS

log = logging.getLogger(__name__)

SCORES_FORMAT_VERSION = 1
COMMITS_DIR = "_commits"
STAGING_DIR = "_staging"
SCORES_DIR = "scores"
QUARANTINE_DIR = "quarantine"
SCORES_METADATA_KEY = "thorax_ray.scores"
FEATURES_METADATA_KEY = "thorax_ray.feature_attributions"
# The calibrated probability of each finding, a column beside the raw ones (thorax_ray.calibration).
CALIBRATED_COLUMNS = tuple(f"{column}_calibrated" for column in FINDING_COLUMNS)

SCORES_QUARANTINE_COLUMNS = (*QUARANTINE_COLUMNS, "run_id", "batch_date", "model_id")
QUARANTINE_SCHEMA = pa.schema([(name, pa.string()) for name in SCORES_QUARANTINE_COLUMNS])
# Pipeline-only columns: the scorer passes failed rows through with these (and its timing); never
# written to scores.
INTERNAL_FIELDS = (("ok", pa.bool_()), ("stage", pa.string()), ("reason", pa.string()),
                   ("_compute_s", pa.float64()), ("_model_s", pa.float64()))
_RUN_ID = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]+$")


class ScoresError(ValueError):
    pass


def run_started(run_id: str) -> float | None:
    """The UTC start time encoded in a run id (seconds since the epoch), None for other names."""
    match = _RUN_ID.match(run_id)
    if not match:
        return None

    return float(calendar.timegm(time.strptime(match.group(1), RUN_ID_TIME)))


# ----- schema ------------------------------------------------------------------------------------------


def score_schema(*, maps: bool, feature_attributions: bool) -> pa.Schema:
    """Columns of the score files (without schema metadata); `maps` adds heatmap and boxes.

    `metadata_source` (since DICOM support; null in files of older runs, which `read_scores` reads
    alongside): where the row's patient metadata came from, "csv" (a metadata table row), "dicom" (the
    image's tags) or "none". `<finding>_calibrated` (since calibration; absent from files of older runs, null
    when read alongside them): the checkpoint's calibration applied to the raw probability of the column before
    it, or that probability as it is when the checkpoint has none (the metadata's "calibration" says which)."""
    fields = [
        ("image_index", pa.string()),
        ("path", pa.string()),
        ("model_id", pa.string()),
        ("run_id", pa.string()),
        ("batch_date", pa.string()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("metadata_source", pa.string()),
        *[(column, pa.float32()) for column in FINDING_COLUMNS],
        *[(column, pa.float32()) for column in CALIBRATED_COLUMNS],
    ]
    if maps:
        fields += [("heatmap", pa.binary()), ("boxes", BOXES_TYPE)]
    if feature_attributions:
        fields.append(("feature_attributions", pa.binary()))
    return pa.schema(fields)


def pipeline_schema(schema: pa.Schema) -> pa.Schema:
    """The score schema plus the pass-through columns of failed rows and the scorer's timing."""
    return pa.schema([*schema, *INTERNAL_FIELDS])


def schema_metadata(*, scores: dict, heatmap: dict | None = None, features: dict | None = None) -> dict[str, str]:
    """Parquet key-value metadata (JSON values) of the score files."""
    metadata = {SCORES_METADATA_KEY: json.dumps(scores)}
    if heatmap is not None:
        metadata[HEATMAP_METADATA_KEY] = json.dumps(heatmap)
    if features is not None:
        metadata[FEATURES_METADATA_KEY] = json.dumps(features)
    return metadata


def feature_attribution_metadata(names: Iterable[str], method: str) -> dict:
    names = list(names)
    return {
        "shape": [len(FINDINGS), len(names)],
        "dtype": "float32",
        "layout": "C order (class, feature); one binary value of 14*F*4 bytes (little-endian float32) per image",
        "classes": list(FINDINGS),
        "feature_names": names,
        "method": method,
        "meaning": "Integrated Gradients of each class logit with respect to each encoded metadata feature "
                   "(baseline: all-zero features); a row sums approximately to logit(x) - logit(0)",
    }


def read_file_metadata(uri: str, *, endpoint_url: str | None = None) -> dict[str, dict]:
    """The JSON metadata of one score file: {key: parsed value} for the thorax_ray keys."""
    fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
    with fs.open(path, "rb") as handle:
        raw = pq.read_schema(handle).metadata or {}
    return {key.decode(): json.loads(value) for key, value in raw.items() if key.decode().startswith("thorax_ray.")}


# ----- writing -----------------------------------------------------------------------------------------


@dataclass
class ScoresWrite:
    """What one write task returns to the driver."""

    files: list[tuple[str, int, int]]  # (staging URI, rows, bytes)
    quarantined: pd.DataFrame
    compute_s: float = 0.0  # time inside the scorer's batch calls
    model_s: float = 0.0  # of which: model forward / attribution (the rest: maps, encoding, boxes)
    metadata_sources: dict[str, int] = field(default_factory=dict)  # scored rows per metadata_source
    unknown_size: int = 0  # scored rows with heatmaps whose original size was unknown (so no boxes)


def staging_uri(out: str, run_id: str, *parts: str) -> str:
    return storage.join(out, STAGING_DIR, run_id, *parts)


def partition(batch_date: str, run_id: str) -> str:
    return f"batch_date={batch_date}/run_id={run_id}"


def write_table_file(table: pa.Table, uri: str, *, compression: str = "zstd", endpoint_url: str | None = None) -> int:
    """Writes one Parquet file (local or s3://); returns its size in bytes."""
    fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
    if "/" in path:
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as handle:
        pq.write_table(table, handle, compression=compression)
    return int(fs.size(path))


def quarantine_table(frame: pd.DataFrame, *, run_id: str, batch_date: str, model_id: str) -> pa.Table:
    frame = frame.reindex(columns=["image_index", "path", "stage", "reason"]).copy()
    frame["run_id"], frame["batch_date"], frame["model_id"] = run_id, batch_date, model_id
    frame = frame.astype(object).where(frame.notna(), None)
    return pa.Table.from_pandas(frame[list(SCORES_QUARANTINE_COLUMNS)], schema=QUARANTINE_SCHEMA, preserve_index=False)


def _relative(out_path: str, path: str) -> str:
    path = path.split("://", 1)[-1]
    if not path.startswith(out_path.rstrip("/") + "/"):
        raise ScoresError(f"{path} is not inside {out_path}")
    return path[len(out_path.rstrip("/")) + 1:]


def publish(out: str, run_id: str, batch_date: str, files: list[tuple[str, int, int]], kind: str, *,
            endpoint_url: str | None = None) -> list[dict]:
    """Moves a run's staging files of `kind` ("scores"/"quarantine") into their partition folder;
    returns commit entries {path (relative to OUT), rows, bytes}."""
    fs, base = storage.filesystem(out, endpoint_url=endpoint_url)
    target = f"{base}/{kind}/{partition(batch_date, run_id)}"
    if files:
        fs.makedirs(target, exist_ok=True)
    entries = []
    for uri, rows, size in files:
        source = uri.split("://", 1)[-1]
        destination = f"{target}/{source.rsplit('/', 1)[-1]}"
        fs.mv(source, destination)
        entries.append({"path": _relative(base, destination), "rows": int(rows), "bytes": int(size)})
    return entries


def commit_name(run_id: str) -> str:
    """Where a run's commit record lives, relative to OUT."""
    return f"{COMMITS_DIR}/{run_id}.json"


def clean_uncommitted(out: str, *, older_than_s: float, endpoint_url: str | None = None,
                      now: float | None = None) -> list[str]:
    """Deletes files of runs that never committed and started more than `older_than_s` ago (a run
    killed midway; younger ones may still be running), and leftover staging folders of committed runs.
    Returns the removed folders."""
    fs, base = storage.filesystem(out, endpoint_url=endpoint_url)
    committed = {r["run_id"] for r in committed_runs(out, endpoint_url=endpoint_url)}
    now = time.time() if now is None else now
    candidates = [(folder, True) for folder in _list_dirs(fs, f"{base}/{STAGING_DIR}")]
    for kind in (SCORES_DIR, QUARANTINE_DIR):
        for day in _list_dirs(fs, f"{base}/{kind}"):
            candidates.extend((folder, False) for folder in _list_dirs(fs, day))
    removed = []
    for folder, staging in candidates:
        name = folder.rstrip("/").rsplit("/", 1)[-1]
        run_id = name.split("=", 1)[1] if name.startswith("run_id=") else name
        started = run_started(run_id)
        if run_id in committed:
            if not staging:
                continue
        elif started is None or now - started < older_than_s:
            continue
        fs.rm(folder, recursive=True)
        removed.append(storage.to_uri(fs, folder))
    if removed:
        log.info("removed %d folder(s) of dead runs: %s", len(removed), removed[:5])
    return removed


def _list_dirs(fs, path: str) -> list[str]:
    try:
        return [entry["name"] for entry in fs.ls(path, detail=True) if entry.get("type") == "directory"]
    except FileNotFoundError:
        return []


# ----- reading (committed files only) -----------------------------------------------------------------


def committed_runs(out: str, *, model_id: str | None = None, endpoint_url: str | None = None) -> list[dict]:
    """The commit records of OUT (oldest first), optionally only those of one model."""
    fs, base = storage.filesystem(out, endpoint_url=endpoint_url)
    try:
        names = sorted(p for p in fs.ls(f"{base}/{COMMITS_DIR}", detail=False) if p.endswith(".json"))
    except FileNotFoundError:
        return []
    records = []
    for name in names:
        record = storage.read_json(storage.to_uri(fs, name), endpoint_url=endpoint_url)
        if record is not None and (model_id is None or record.get("model_id") == model_id):
            records.append(record)
    return records


def committed_files(out: str, kind: str = SCORES_DIR, *, model_id: str | None = None, run_id: str | None = None,
                    endpoint_url: str | None = None) -> list[str]:
    """URIs of the committed files of `kind` ("scores" or "quarantine")."""
    key = "files" if kind == SCORES_DIR else "quarantine_files"
    uris = []
    for record in committed_runs(out, model_id=model_id, endpoint_url=endpoint_url):
        if run_id is None or record["run_id"] == run_id:
            uris.extend(storage.join(out, entry["path"]) for entry in record.get(key, []))
    return uris


def _read_tables(uris: list[str], columns: list[str] | None, endpoint_url: str | None) -> list[pa.Table]:
    tables = []
    for uri in uris:
        fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
        with fs.open(path, "rb") as handle:
            table = pq.read_table(handle, columns=columns)
        tables.append(table.replace_schema_metadata(None))
    return tables


def scored_index(out: str, model_id: str, *, endpoint_url: str | None = None) -> set[str]:
    """image_index of every image already scored by `model_id` (the committed files of its runs, whose
    rows are all that model's; reads one column)."""
    tables = _read_tables(committed_files(out, model_id=model_id, endpoint_url=endpoint_url),
                          ["image_index"], endpoint_url)
    return {name for table in tables for name in table.column("image_index").to_pylist()}


def read_scores(out: str, model_id: str | None = None, *, columns: list[str] | None = None,
                run_id: str | None = None, endpoint_url: str | None = None) -> pd.DataFrame:
    """Every committed score row of OUT (of one model / run when given) as a DataFrame.

    One row per (image_index, model_id): should two commits hold the same image for one model, the earliest
    committed row is kept. `frame.attrs["heatmap"]` holds the heatmap description (shape, dtype, classes,
    ...), `frame.attrs["feature_attributions"]` the feature names, `frame.attrs["split_hash"]` the split the
    model was trained on, `frame.attrs["boxes"]` how boxes were made (incl. "min_probability": which
    findings got them), `frame.attrs["model_init"]` how the model was initialised,
    `frame.attrs["metadata_features"]` the metadata it saw, `frame.attrs["calibration"]` whether and how the
    calibrated columns were calibrated (thorax_ray.calibration.describe_calibration; absent for runs written
    before calibration), `frame.attrs["tta"]` the test-time augmentation of the probability columns and what
    the maps come from (thorax_ray.scoring.score.tta_record: "kind", "views", "heatmaps", ...; absent for runs
    written before it) and `frame.attrs["data_origin"]` what the model
    was trained on and what it scored ({"model": "synthetic"|"real"|"unknown", "input": ..., "warning":
    str|None}), when all runs share one.
    """
    uris = committed_files(out, model_id=model_id, run_id=run_id, endpoint_url=endpoint_url)  # commit order
    key = ["image_index", "model_id"]
    read = None if columns is None else [*columns, *(c for c in key if c not in columns)]
    tables = _read_tables(uris, read, endpoint_url)
    if not tables:
        names = columns or score_schema(maps=True, feature_attributions=False).names
        return pd.DataFrame({name: pd.Series(dtype=object) for name in names})
    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    frame = frame.drop_duplicates(key, keep="first").reset_index(drop=True)
    if columns is not None:
        frame = frame[list(columns)]
    described = {}
    for record in committed_runs(out, model_id=model_id, endpoint_url=endpoint_url):
        if run_id is None or record["run_id"] == run_id:
            for key in ("heatmap", "feature_attributions", "split_hash", "data_origin", "boxes", "model_init",
                        "metadata_features", "calibration", "tta"):
                if record.get(key) is not None:
                    described.setdefault(key, []).append(json.dumps(record[key], sort_keys=True))
    for key, values in described.items():
        if len(set(values)) == 1:
            frame.attrs[key] = json.loads(values[0])
    return frame


def read_quarantine(out: str, *, run_id: str | None = None, endpoint_url: str | None = None) -> pd.DataFrame:
    """Every committed quarantine row (image_index, path, stage, reason, run_id, batch_date, model_id)."""
    tables = _read_tables(committed_files(out, QUARANTINE_DIR, run_id=run_id, endpoint_url=endpoint_url),
                          None, endpoint_url)
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SCORES_QUARANTINE_COLUMNS})
    return pa.concat_tables(tables).to_pandas()


@dataclass
class OutputSize:
    rows: int
    bytes: int
    files: int
    per_image: float = field(init=False)

    def __post_init__(self) -> None:
        self.per_image = self.bytes / self.rows if self.rows else 0.0


def output_size(out: str, *, model_id: str | None = None, run_id: str | None = None,
                endpoint_url: str | None = None) -> OutputSize:
    """Bytes of the committed score files (as stored) per scored row."""
    rows = size = files = 0
    for record in committed_runs(out, model_id=model_id, endpoint_url=endpoint_url):
        if run_id is None or record["run_id"] == run_id:
            for entry in record.get("files", []):
                rows, size, files = rows + entry["rows"], size + entry["bytes"], files + 1
    return OutputSize(rows=rows, bytes=size, files=files)
