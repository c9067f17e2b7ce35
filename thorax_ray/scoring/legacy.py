"""Read-only access to outputs written before the scores became Delta tables (thorax_ray.scoring.delta):

    OUT/_commits/<run_id>.json                                        commit record of a run
    OUT/scores/batch_date=YYYY-MM-DD/run_id=<run_id>/part-*.parquet   the files it lists

The readers of thorax_ray.scoring.output read these runs alongside the tables, so older outputs still
evaluate; a scoring run refuses to write into such an output until `jobs/maintain_scores.py --migrate`
has moved its runs into the tables (a table's vacuum would delete the old files, which its log does not list).
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from thorax_ray import storage

COMMITS_DIR = "_commits"
STAGING_DIR = "_staging"


def commit_name(run_id: str) -> str:
    """Where a run's commit record lived, relative to OUT."""
    return f"{COMMITS_DIR}/{run_id}.json"


def records(out: str, *, endpoint_url: str | None = None) -> list[dict]:
    """The old-layout commit records of OUT (oldest first); [] when there are none."""
    fs, base = storage.filesystem(out, endpoint_url=endpoint_url)
    try:
        names = sorted(p for p in fs.ls(f"{base}/{COMMITS_DIR}", detail=False) if p.endswith(".json"))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        record = storage.read_json(storage.to_uri(fs, name), endpoint_url=endpoint_url)
        if record is not None:
            found.append(record)
    return found


def files(record: dict, out: str, kind: str) -> list[str]:
    """URIs of the files of `kind` ("scores" or "quarantine") a record lists."""
    key = "files" if kind == "scores" else "quarantine_files"
    return [storage.join(out, entry["path"]) for entry in record.get(key, [])]


def read_tables(uris: list[str], columns: list[str] | None, endpoint_url: str | None) -> list[pa.Table]:
    tables = []
    for uri in uris:
        fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
        with fs.open(path, "rb") as handle:
            table = pq.read_table(handle, columns=columns)
        tables.append(table.replace_schema_metadata(None))
    return tables
