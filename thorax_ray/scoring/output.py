"""The scoring output: two Delta Lake tables (thorax_ray.scoring.delta), their schema and metadata, a run's
commit, the already-scored index and the readers.

Layout of an output `OUT/` (local folder or s3:// prefix):

    OUT/scores/_delta_log/...                                            the scores table's transaction log
    OUT/scores/batch_date=YYYY-MM-DD/run_id=<run_id>/part-*.parquet      one row per scored image (as written)
    OUT/scores/batch_date=YYYY-MM-DD/part-*.parquet                      the same rows after compaction
    OUT/quarantine/_delta_log/..., OUT/quarantine/batch_date=.../run_id=.../part-0.parquet   images a run could not score
    OUT/_lock.json                                                       lease of the run writing now (thorax_ray.lease)

Both tables are partitioned by batch_date (a partition value in the log, not a column of the data files);
run_id, model_id and the rest are columns. A run's write tasks write its Parquet files into its own folder
`batch_date=.../run_id=<run_id>/` of the scores table; when every image is done the driver adds them to the
table in one Delta commit, whose commitInfo carries the run's record (model, TTA, maps, counts, ...:
`committed_runs`). That commit is the run's commit: every Delta reader (DuckDB's delta_scan, Spark, Trino,
Athena, deltalake for pandas, and `read_scores` here) sees the run's rows all at once or not at all. The
quarantined rows follow in a commit of the quarantine table (a run killed between the two loses its
quarantine rows; the next run tries those images again, as it does every quarantined image). A run that
fails or is interrupted removes its folder; the folder of a run killed outright (SIGKILL, a lost node) is
never in the log, so no Delta reader sees it, and `clean_uncommitted` (or a vacuum) deletes it later. Reading
`OUT/scores/**/*.parquet` without the log is not a reader of this output: it also counts such files and,
after a compaction, the replaced ones until they are vacuumed (docs/scores_table.md).

A run holds OUT's lease from reading the already-scored index until its commit, so two runs never score one
image twice. Outputs of older versions (`OUT/_commits/`, thorax_ray.scoring.legacy) are read alongside; a
scoring run refuses them until `jobs/maintain_scores.py --migrate` moved them into the tables.
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
import pyarrow.dataset as pads
import pyarrow.parquet as pq

import thorax_ray.scoring.delta as delta
import thorax_ray.scoring.legacy as legacy
from thorax_ray import storage
from thorax_ray.attribution import BOXES_TYPE, HEATMAP_METADATA_KEY
from thorax_ray.data.quarantine import QUARANTINE_COLUMNS
from thorax_ray.data.staged import RUN_ID_TIME
from thorax_ray.labels import FINDING_COLUMNS, FINDINGS

log = logging.getLogger(__name__)

COMMITS_DIR, STAGING_DIR, commit_name = legacy.COMMITS_DIR, legacy.STAGING_DIR, legacy.commit_name  # old layout
SCORES_FORMAT_VERSION = 2  # 2: Delta tables; 1: files listed by OUT/_commits/<run_id>.json
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
# Keys of a run's record that describe its rows (read_scores' attrs).
DESCRIBING_KEYS = ("heatmap", "feature_attributions", "split_hash", "data_origin", "boxes", "model_init",
                   "metadata_features", "calibration", "tta")
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
    it, or that probability as it is when the checkpoint has none (the metadata's "calibration" says which).
    `ood_score` (since monitoring; absent from files of older runs): the Mahalanobis distance of the image's
    penultimate features from the validation features (thorax_ray.monitoring.ood), null when the checkpoint has no
    validation reference."""
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
        ("ood_score", pa.float32()),
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

    files: list[tuple[str, int, int]]  # (URI in the run's folder of the scores table, rows, bytes)
    quarantined: pd.DataFrame
    compute_s: float = 0.0  # time inside the scorer's batch calls
    model_s: float = 0.0  # of which: model forward / attribution (the rest: maps, encoding, boxes)
    metadata_sources: dict[str, int] = field(default_factory=dict)  # scored rows per metadata_source
    unknown_size: int = 0  # scored rows with heatmaps whose original size was unknown (so no boxes)


def partition(batch_date: str, run_id: str) -> str:
    return f"batch_date={batch_date}/run_id={run_id}"


def run_folder(out: str, kind: str, batch_date: str, run_id: str) -> str:
    """The folder of table `kind` ("scores"/"quarantine") that one run writes its files into."""
    return storage.join(out, kind, partition(batch_date, run_id))


def data_schema(schema: pa.Schema) -> pa.Schema:
    """The columns of a data file: the table's less its partition column (batch_date lives in the log)."""
    index = schema.get_field_index(delta.PARTITION_COLUMN)
    return schema if index < 0 else schema.remove(index)


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


def _relative(out: str, uri: str) -> str:
    base = out.split("://", 1)[-1].rstrip("/")
    path = uri.split("://", 1)[-1]
    if not path.startswith(base + "/"):
        raise ScoresError(f"{path} is not inside {out}")
    return path[len(base) + 1:]


def commit_scores(out: str, record: dict, files: list[tuple[str, int, int]], schema: pa.Schema, *,
                  endpoint_url: str | None = None) -> tuple[str, list[dict]]:
    """The run's commit: adds its score files (in its folder of the scores table) to the table in one Delta
    commit holding `record` (which gets "files": [{path relative to OUT, rows, bytes}]); returns (URI of the
    commit's log entry, the file entries). Call it holding OUT's lease, after fencing it."""
    entries = [{"path": _relative(out, uri), "rows": int(rows), "bytes": int(size)} for uri, rows, size in files]
    record = {**record, "files": entries}
    table = storage.join(out, SCORES_DIR)
    version = delta.commit_files(table, [delta.DataFile(u, r, b) for u, r, b in files], schema,
                                 partition=record["batch_date"], record=record, endpoint_url=endpoint_url)
    return storage.join(table, delta.LOG_DIR, f"{version:020d}.json"), entries


def commit_quarantine(out: str, table: pa.Table, *, run_id: str, batch_date: str, model_id: str,
                      file_name: str = "part-0.parquet", endpoint_url: str | None = None) -> list[dict]:
    """Writes a run's quarantined rows into its folder of the quarantine table and commits them (after the
    run's commit); returns the file entries ([] when there are no rows)."""
    if table.num_rows == 0:
        return []
    uri = storage.join(run_folder(out, QUARANTINE_DIR, batch_date, run_id), file_name)
    size = write_table_file(table.select(data_schema(table.schema).names), uri, endpoint_url=endpoint_url)
    record = {"run_id": run_id, "batch_date": batch_date, "model_id": model_id, "rows": table.num_rows}
    delta.commit_files(storage.join(out, QUARANTINE_DIR), [delta.DataFile(uri, table.num_rows, size)],
                       QUARANTINE_SCHEMA, partition=batch_date, record=record, endpoint_url=endpoint_url)
    return [{"path": _relative(out, uri), "rows": table.num_rows, "bytes": size}]


def check_writable(out: str, *, endpoint_url: str | None = None) -> None:
    """Refuses (ScoresError, one line) an output that still holds runs in the layout before Delta tables."""
    old = legacy.records(out, endpoint_url=endpoint_url)
    if old:
        raise ScoresError(f"{out} holds {len(old)} scoring run(s) in the layout before Delta tables "
                          f"({COMMITS_DIR}/); move them into the tables first: "
                          f"python jobs/maintain_scores.py --out {out} --migrate")


def clean_uncommitted(out: str, *, older_than_s: float, endpoint_url: str | None = None,
                      now: float | None = None) -> list[str]:
    """Deletes the run folders (of both tables) of runs that never committed to that table and started more
    than `older_than_s` ago (a run killed midway; younger ones may still be running), and staging folders
    left by older versions. Returns the removed folders. Call it holding OUT's lease."""
    fs, base = storage.filesystem(out, endpoint_url=endpoint_url)
    now = time.time() if now is None else now
    candidates = [(folder, set()) for folder in _list_dirs(fs, f"{base}/{STAGING_DIR}")]
    for kind in (SCORES_DIR, QUARANTINE_DIR):
        committed = {r.get("run_id") for _, r in delta.commit_records(storage.join(out, kind), endpoint_url=endpoint_url)}
        committed |= {r.get("run_id") for r in legacy.records(out, endpoint_url=endpoint_url)}
        for day in _list_dirs(fs, f"{base}/{kind}"):
            candidates.extend((folder, committed) for folder in _list_dirs(fs, day)
                              if folder.rstrip("/").rsplit("/", 1)[-1].startswith("run_id="))
    removed = []
    for folder, committed in candidates:
        name = folder.rstrip("/").rsplit("/", 1)[-1]
        run_id = name.split("=", 1)[1] if name.startswith("run_id=") else name
        started = run_started(run_id)
        if run_id in committed or started is None or now - started < older_than_s:
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


# ----- reading (the committed snapshot only) -----------------------------------------------------------


def committed_runs(out: str, *, model_id: str | None = None, endpoint_url: str | None = None) -> list[dict]:
    """The records of OUT's committed runs (oldest first; those of the old layout first), optionally only those
    of one model. Each is what the run committed: run_id, batch_date, model_id, counts, files, maps, tta, ..."""
    found = legacy.records(out, endpoint_url=endpoint_url)
    found += [record for _, record in delta.commit_records(storage.join(out, SCORES_DIR), endpoint_url=endpoint_url)]
    return [record for record in found if model_id is None or record.get("model_id") == model_id]


def committed_files(out: str, kind: str = SCORES_DIR, *, model_id: str | None = None, run_id: str | None = None,
                    endpoint_url: str | None = None) -> list[str]:
    """URIs of the data files of table `kind` ("scores" or "quarantine") in its committed snapshot (and of
    old-layout runs); with `model_id`/`run_id`: those still in a run's own folder (not compacted yet)."""
    records = [r for r in committed_runs(out, model_id=model_id, endpoint_url=endpoint_url)
               if run_id is None or r["run_id"] == run_id]
    uris = [uri for r in legacy.records(out, endpoint_url=endpoint_url) if r in records
            for uri in legacy.files(r, out, kind)]
    current = delta.table_files(storage.join(out, kind), endpoint_url=endpoint_url)
    if model_id is None and run_id is None:
        return uris + [f["uri"] for f in current]
    folders = {f"run_id={r['run_id']}/" for r in records}
    return uris + [f["uri"] for f in current if any(folder in f["path"] for folder in folders)]


def _filter(model_id: str | None, run_id: str | None) -> pads.Expression | None:
    expression = None
    for column, value in (("model_id", model_id), ("run_id", run_id)):
        if value is not None:
            term = pads.field(column) == value
            expression = term if expression is None else expression & term
    return expression


def _legacy_tables(out: str, kind: str, model_id: str | None, run_id: str | None, columns: list[str] | None,
                   endpoint_url: str | None) -> list[pa.Table]:
    uris = [uri for r in legacy.records(out, endpoint_url=endpoint_url)
            if (model_id is None or r.get("model_id") == model_id) and (run_id is None or r["run_id"] == run_id)
            for uri in legacy.files(r, out, kind)]
    return legacy.read_tables(uris, columns, endpoint_url)


def _read(out: str, kind: str, *, model_id: str | None, run_id: str | None, columns: list[str] | None,
          endpoint_url: str | None) -> list[pa.Table]:
    """The old layout's tables (commit order), then the Delta table's committed rows."""
    tables = _legacy_tables(out, kind, model_id, run_id, columns, endpoint_url)
    table = delta.read_table(storage.join(out, kind), columns=columns, filter=_filter(model_id, run_id),
                             endpoint_url=endpoint_url)
    if table is not None:
        tables.append(table.replace_schema_metadata(None))
    return tables


def scored_index(out: str, model_id: str, *, endpoint_url: str | None = None) -> set[str]:
    """image_index of every image already scored by `model_id` in a committed run (reads one column)."""
    tables = _read(out, SCORES_DIR, model_id=model_id, run_id=None, columns=["image_index"], endpoint_url=endpoint_url)
    return {name for table in tables for name in table.column("image_index").to_pylist()}


def read_scores(out: str, model_id: str | None = None, *, columns: list[str] | None = None,
                run_id: str | None = None, endpoint_url: str | None = None) -> pd.DataFrame:
    """Every committed score row of OUT (of one model / run when given) as a DataFrame: the scores table's
    committed snapshot, exactly what DuckDB's delta_scan or deltalake read (plus the runs of an output
    written before Delta tables, read first).

    One row per (image_index, model_id): the lease keeps two runs from scoring one image; should old-layout
    commits overlap (outputs written without the lease), the earliest committed row is kept. `frame.attrs["heatmap"]`
    holds the heatmap description (shape, dtype, classes,
    ...), `frame.attrs["feature_attributions"]` the feature names, `frame.attrs["split_hash"]` the split the
    model was trained on, `frame.attrs["boxes"]` how boxes were made (incl. "min_probability": which
    findings got them), `frame.attrs["model_init"]` how the model was initialised,
    `frame.attrs["metadata_features"]` the metadata it saw, `frame.attrs["calibration"]` whether and how the
    calibrated columns were calibrated (thorax_ray.calibration.describe_calibration; absent for runs written
    before calibration), `frame.attrs["tta"]` the test-time augmentation of the probability columns and what
    the maps come from (thorax_ray.scoring.score.tta_record: "kind", "views", "heatmaps", ...; absent for runs
    written before it) and `frame.attrs["data_origin"]` what the model
    was trained on and what it scored ({"model": "synthetic"|"real"|"unknown", "input": ..., "warning":
    str|None}), when all runs share one (from the runs' commit records, `committed_runs`).
    """
    key = ["image_index", "model_id"]
    read = None if columns is None else [*columns, *(c for c in key if c not in columns)]
    tables = [t for t in _read(out, SCORES_DIR, model_id=model_id, run_id=run_id, columns=read,
                               endpoint_url=endpoint_url) if t.num_rows]
    if not tables:
        names = columns or score_schema(maps=True, feature_attributions=False).names
        return pd.DataFrame({name: pd.Series(dtype=object) for name in names})
    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    if len(tables) > 1:
        frame = frame.drop_duplicates(key, keep="first").reset_index(drop=True)
    if columns is not None:
        frame = frame[list(columns)]
    described = {}
    for record in committed_runs(out, model_id=model_id, endpoint_url=endpoint_url):
        if run_id is None or record["run_id"] == run_id:
            for name in DESCRIBING_KEYS:
                if record.get(name) is not None:
                    described.setdefault(name, []).append(json.dumps(record[name], sort_keys=True))
    for name, values in described.items():
        if len(set(values)) == 1:
            frame.attrs[name] = json.loads(values[0])
    return frame


def read_quarantine(out: str, *, run_id: str | None = None, endpoint_url: str | None = None) -> pd.DataFrame:
    """Every committed quarantine row (image_index, path, stage, reason, run_id, batch_date, model_id)."""
    tables = [t.select(list(SCORES_QUARANTINE_COLUMNS)) for t in
              _read(out, QUARANTINE_DIR, model_id=None, run_id=run_id, columns=None, endpoint_url=endpoint_url)
              if t.num_rows]
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SCORES_QUARANTINE_COLUMNS})
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


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
    """Bytes of the committed score files per scored row, as the runs wrote them (their commit records)."""
    rows = size = files = 0
    for record in committed_runs(out, model_id=model_id, endpoint_url=endpoint_url):
        if run_id is None or record["run_id"] == run_id:
            for entry in record.get("files", []):
                rows, size, files = rows + entry["rows"], size + entry["bytes"], files + 1
    return OutputSize(rows=rows, bytes=size, files=files)
