"""Upkeep of a scoring output's Delta tables (jobs/maintain_scores.py): compaction of the nightly small files,
retention of the files that compaction replaced, and the move of runs written before the tables into them.

    with maintenance_lease(out):
        compact(out)                  # per batch_date, small files rewritten into few (one Delta commit per table)
        vacuum(out, retention_hours=168)   # files no longer in the tables, older than that, deleted

Each holds OUT's lease, so it never runs beside a scoring run (a vacuum could otherwise delete the files of a
run that has written but not yet committed). Compaction changes no row: `read_scores` and every Delta reader
return the same rows before and after (tested); readers of snapshots older than the retention lose them.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa

import thorax_ray.scoring.delta as delta
import thorax_ray.scoring.legacy as legacy
from thorax_ray import storage
from thorax_ray.data.staged import LOCK_FILE
from thorax_ray.lease import acquire_lease
from thorax_ray.scoring.output import (QUARANTINE_DIR, QUARANTINE_SCHEMA, SCORES_DIR, commit_quarantine,
                                       commit_scores, data_schema, run_folder, write_table_file)

log = logging.getLogger(__name__)

TABLES = (SCORES_DIR, QUARANTINE_DIR)
DEFAULT_RETENTION_HOURS = 168.0  # Delta's own default (delta.deletedFileRetentionDuration, 7 days)


@dataclass(frozen=True)
class TableUpkeep:
    table: str
    files_before: int
    files_after: int
    removed: int = 0  # files deleted by the vacuum


@contextmanager
def maintenance_lease(out: str, *, wait_s: float = 0.0, endpoint_url: str | None = None) -> Iterator[None]:
    """Holds OUT's lease (thorax_ray.lease) while the tables are maintained; LeaseBusy while a run writes."""
    with acquire_lease(storage.join(out, LOCK_FILE), wait_s=wait_s, about={"run_id": "maintenance"},
                       endpoint_url=endpoint_url):
        yield


def open_tables(out: str, *, endpoint_url: str | None = None) -> list[tuple[str, object]]:
    """(name, deltalake.DeltaTable) of each of OUT's tables (scores, quarantine) that exists."""
    tables = [(kind, delta.open_table(storage.join(out, kind), endpoint_url=endpoint_url)) for kind in TABLES]
    return [(kind, table) for kind, table in tables if table is not None]


def compact(out: str, *, target_mb: int = 256, endpoint_url: str | None = None,
            tables: list[tuple[str, object]] | None = None) -> list[TableUpkeep]:
    """Rewrites each table's small files into files of up to `target_mb` per batch_date (Delta OPTIMIZE,
    one commit per table); the replaced files stay until a vacuum older than the retention deletes them.
    `tables`: OUT's tables as `open_tables` gave them (opened now when not given)."""
    done = []
    for kind, table in tables if tables is not None else open_tables(out, endpoint_url=endpoint_url):
        before = len(table.file_uris())
        table.optimize.compact(target_size=target_mb * 1024 * 1024)
        done.append(TableUpkeep(kind, before, len(table.file_uris())))
        log.info("%s: %d file(s) compacted into %d", kind, before, done[-1].files_after)
    return done


def vacuum(out: str, *, retention_hours: float = DEFAULT_RETENTION_HOURS,
           endpoint_url: str | None = None, tables: list[tuple[str, object]] | None = None) -> list[TableUpkeep]:
    """Deletes the files each table no longer lists (replaced by compaction, or left by killed runs) that are
    older than `retention_hours` (0: all of them; readers of older snapshots then lose their files).
    `tables`: OUT's tables as `open_tables` gave them (opened now when not given)."""
    if retention_hours < 0:
        raise ValueError(f"--vacuum-hours must be >= 0, got {retention_hours}")
    done = []
    for kind, table in tables if tables is not None else open_tables(out, endpoint_url=endpoint_url):
        files = len(table.file_uris())
        removed = table.vacuum(retention_hours=int(retention_hours), dry_run=False, enforce_retention_duration=False,
                               full=True)  # full: also files no commit ever listed (killed runs')
        done.append(TableUpkeep(kind, files, files, removed=len(removed)))
        log.info("%s: %d file(s) no longer in the table deleted", kind, len(removed))
    return done


def migrate(out: str, *, endpoint_url: str | None = None) -> list[str]:
    """Moves the runs of an output written before the Delta tables (OUT/_commits/) into the tables, oldest
    first, one commit per run holding its old record; then deletes the old record and files. Idempotent: a
    run already in the table (a migration killed midway) only loses its old record and files. Returns the
    moved run ids."""
    moved = []
    in_table = {r.get("run_id") for _, r in delta.commit_records(storage.join(out, SCORES_DIR), endpoint_url=endpoint_url)}
    for record in legacy.records(out, endpoint_url=endpoint_url):
        run_id, batch_date = record["run_id"], record.get("batch_date")
        old_files = legacy.files(record, out, SCORES_DIR) + legacy.files(record, out, QUARANTINE_DIR)
        if run_id not in in_table:
            _migrate_run(out, record, endpoint_url)
            moved.append(run_id)
        fs, base = storage.filesystem(out, endpoint_url=endpoint_url)
        fs.rm(f"{base}/{legacy.commit_name(run_id)}")
        for uri in old_files:
            fs.rm(uri.split("://", 1)[-1] if storage.is_remote(uri) else uri)
        log.info("run %s (%s) moved into the tables", run_id, batch_date)
    return moved


def _migrate_run(out: str, record: dict, endpoint_url: str | None) -> None:
    run_id, batch_date = record["run_id"], record.get("batch_date") or "1970-01-01"
    base = {k: v for k, v in record.items() if k not in ("files", "quarantine_files")}
    base["batch_date"] = batch_date
    written, schema = [], None
    for index, table in enumerate(legacy.read_tables(legacy.files(record, out, SCORES_DIR), None, endpoint_url)):
        schema = table.schema
        uri = storage.join(run_folder(out, SCORES_DIR, batch_date, run_id), f"migrated-{index:05d}.parquet")
        data = table.select(data_schema(table.schema).names)
        written.append((uri, data.num_rows, write_table_file(data, uri, endpoint_url=endpoint_url)))
    if schema is None:
        schema = pa.schema([("image_index", pa.string()), ("model_id", pa.string()), ("run_id", pa.string())])
    if schema.get_field_index(delta.PARTITION_COLUMN) < 0:
        schema = schema.append(pa.field(delta.PARTITION_COLUMN, pa.string()))
    commit_scores(out, base, written, schema, endpoint_url=endpoint_url)
    tables = legacy.read_tables(legacy.files(record, out, QUARANTINE_DIR), None, endpoint_url)
    if tables:
        quarantine = pa.concat_tables([t.cast(QUARANTINE_SCHEMA) for t in tables])
        commit_quarantine(out, quarantine, run_id=run_id, batch_date=batch_date, model_id=record.get("model_id", ""),
                          file_name="migrated-00000.parquet", endpoint_url=endpoint_url)
