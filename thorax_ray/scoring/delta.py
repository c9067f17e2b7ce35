"""The scores and the quarantine as Delta Lake tables (Parquet data files plus the `_delta_log/` transaction
log), through the `deltalake` package: what every engine (DuckDB's delta_scan, Spark, Trino, Athena, pandas
through deltalake) reads is the table's committed snapshot, never a file a run wrote but did not commit.

A scoring run's write tasks put Parquet files into the table's folder (thorax_ray.scoring.sink); the driver
then commits them in one Delta transaction (`commit_files`): that log entry is the run's commit, and its
commitInfo carries the run's record under RUN_KEY (`commit_records` reads them back). The log keeps every
commit's entry (TABLE_CONFIGURATION: a 100-year log retention), so the runs' records outlive checkpoints.

On S3, commits use conditional writes (`If-None-Match`, delta-rs's `conditional_put=etag`): two writers can
never both write one log version. Scoring runs hold OUT's lease as well (thorax_ray.lease), so commits on
a table do not race; a commit is not retried by delta-rs (a retried commit of a PUT that S3 applied but
whose answer was lost would commit the run twice): `commit_files` looks in the log for its own run instead.
Endpoint and retry budget come from thorax_ray.storage (credentials: the standard AWS variables, which
object_store reads itself; never logged).
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as pads

from thorax_ray import storage

log = logging.getLogger(__name__)

RUN_KEY = "thorax_ray.run"  # commitInfo key of a run's record (a JSON string)
LOG_DIR = "_delta_log"
PARTITION_COLUMN = "batch_date"
TABLE_CONFIGURATION = {"delta.logRetentionDuration": "interval 36500 days"}
_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")


class DeltaCommitError(RuntimeError):
    pass


@dataclass(frozen=True)
class DataFile:
    """A Parquet file a run wrote into a table's folder: its URI, rows and bytes."""

    uri: str
    rows: int
    bytes: int


def storage_options(uri: str, *, endpoint_url: str | None = None) -> dict[str, str] | None:
    """deltalake's storage options for `uri`: None for local paths; for s3:// the endpoint (explicit or
    AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL), the region, the retry budget (storage.s3_attempts) and conditional
    writes for commits. Credentials are not copied: object_store reads the AWS variables itself."""
    if not storage.is_remote(uri):
        return None
    options = {"conditional_put": "etag", "max_retries": str(storage.s3_attempts() - 1)}
    endpoint = endpoint_url or storage.endpoint_from_env()
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    region = storage._region() or ("us-east-1" if endpoint else None)
    if region:
        options["AWS_REGION"] = region
    return options


def table_uri(uri: str) -> str:
    """The URI deltalake takes: s3a:// spelt s3://, local paths absolute."""
    if uri.startswith("s3a://"):
        return "s3://" + uri[len("s3a://"):]
    if storage.is_remote(uri):
        return uri.rstrip("/")
    return storage.filesystem(uri)[1]


def open_table(uri: str, *, endpoint_url: str | None = None):
    """The Delta table at `uri` (deltalake.DeltaTable), or None where there is none yet."""
    from deltalake import DeltaTable  # deferred: deltalake (absent on the GPU machine)
    from deltalake.exceptions import TableNotFoundError  # deferred: deltalake (absent on the GPU machine)

    try:
        return DeltaTable(table_uri(uri), storage_options=storage_options(uri, endpoint_url=endpoint_url))
    except TableNotFoundError:
        return None


def is_table(uri: str, *, endpoint_url: str | None = None) -> bool:
    fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
    return bool(_log_names(fs, f"{path}/{LOG_DIR}"))


def read_table(uri: str, *, columns: list[str] | None = None, filter: pads.Expression | None = None,
               endpoint_url: str | None = None) -> pa.Table | None:
    """The committed rows of the table at `uri` (None when there is no table): `columns` that the table lacks
    come back as nulls."""
    table = open_table(uri, endpoint_url=endpoint_url)
    if table is None:
        return None
    dataset = table.to_pyarrow_dataset()
    names = dataset.schema.names
    read = None if columns is None else [c for c in columns if c in names]
    result = dataset.to_table(columns=read, filter=filter)
    for column in columns or []:
        if column not in names:
            result = result.append_column(column, pa.nulls(result.num_rows, pa.string()))
    return result if columns is None else result.select(list(columns))


def table_files(uri: str, *, endpoint_url: str | None = None) -> list[dict]:
    """The data files of the table's current snapshot: [{uri, path (relative to the table), bytes, rows}]."""
    table = open_table(uri, endpoint_url=endpoint_url)
    if table is None:
        return []
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    root = uri.rstrip("/")
    return [{"uri": storage.join(root, a["path"]), "path": a["path"], "bytes": int(a["size_bytes"]),
             "rows": None if a.get("num_records") is None else int(a["num_records"])} for a in actions]


def commit_records(uri: str, *, key: str = RUN_KEY, endpoint_url: str | None = None) -> list[tuple[int, dict]]:
    """(version, record) of every commit of the table whose commitInfo holds `key`, oldest first. Read from
    the log's JSON entries directly (one GET each), as any Delta reader may."""
    fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
    names = _log_names(fs, f"{path}/{LOG_DIR}")
    if not names:
        return []
    contents = fs.cat([f"{path}/{LOG_DIR}/{name}" for name in names])
    records = []
    for name in names:
        raw = contents[f"{path}/{LOG_DIR}/{name}"]
        for line in raw.decode().splitlines():
            info = json.loads(line).get("commitInfo") if line.strip() else None
            if info is not None and key in info:
                records.append((int(name[:20]), json.loads(info[key])))
                break
    return records


def _log_names(fs, path: str) -> list[str]:
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return sorted(n for n in (e.rstrip("/").rsplit("/", 1)[-1] for e in entries) if _COMMIT_FILE.match(n))


def _add_action(root: str, file: DataFile, partition: str | None):
    from deltalake.transaction import AddAction  # deferred: deltalake (absent on the GPU machine)

    location = file.uri.split("://", 1)[-1]
    base = root.split("://", 1)[-1].rstrip("/")
    if not location.startswith(base + "/"):
        raise DeltaCommitError(f"{file.uri} is not inside the table {root}")
    return AddAction(location[len(base) + 1:], int(file.bytes), {PARTITION_COLUMN: partition},
                     int(time.time() * 1000), True, json.dumps({"numRecords": int(file.rows)}))


def commit_files(uri: str, files: list[DataFile], schema: pa.Schema, *, partition: str, record: dict,
                 endpoint_url: str | None = None) -> int:
    """Adds `files` (of partition `batch_date=partition`) to the table at `uri` in one commit whose
    commitInfo holds `record` (under RUN_KEY; record["run_id"] names the run), creating the table with
    `schema` (partitioned by batch_date) when there is none and adding the columns of `schema` it lacks;
    returns the commit's version. Call it while holding OUT's lease."""
    from deltalake import CommitProperties, Schema  # deferred: deltalake (absent on the GPU machine)
    from deltalake.transaction import create_table_with_add_actions  # deferred: deltalake (absent on the GPU machine)

    options = storage_options(uri, endpoint_url=endpoint_url)
    properties = CommitProperties(custom_metadata={RUN_KEY: json.dumps(record, default=str)}, max_commit_retries=0)
    actions = [_add_action(uri, file, partition) for file in files]
    table = open_table(uri, endpoint_url=endpoint_url)
    try:
        if table is None:
            create_table_with_add_actions(table_uri(uri), Schema.from_arrow(schema), actions, mode="error",
                                          partition_by=[PARTITION_COLUMN], configuration=TABLE_CONFIGURATION,
                                          storage_options=options, commit_properties=properties)
            return 0
        _add_columns(table, schema)
        table.create_write_transaction(actions, mode="append", schema=table.schema(),
                                       partition_by=[PARTITION_COLUMN], commit_properties=properties)
        return table.version()
    except Exception as error:  # S3 may have applied a commit whose answer was lost: the log says
        version = _committed_version(uri, record["run_id"], endpoint_url)
        if version is None:
            raise DeltaCommitError(f"commit to {uri} failed: {error}") from error
        log.info("commit of run %s to %s answered %s, but the log holds it (version %d)", record["run_id"], uri,
                 type(error).__name__, version)
        return version


def _committed_version(uri: str, run_id: str, endpoint_url: str | None) -> int | None:
    found = [version for version, record in commit_records(uri, endpoint_url=endpoint_url)
             if record.get("run_id") == run_id]
    return found[-1] if found else None


def _add_columns(table, schema: pa.Schema) -> None:
    """Adds the fields of `schema` the table lacks (nullable; older files read them as nulls)."""
    from deltalake import Field, Schema  # deferred: deltalake (absent on the GPU machine)

    have = {field.name for field in table.schema().fields}
    missing = [field for field in schema if field.name not in have]
    if missing:
        fields = Schema.from_arrow(pa.schema(missing)).fields
        table.alter.add_columns([Field(f.name, f.type, nullable=True) for f in fields])
        log.info("added column(s) %s to %s", [f.name for f in missing], table.table_uri)
