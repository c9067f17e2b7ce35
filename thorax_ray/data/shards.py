"""Prepared Parquet shards: resized uint8 images with labels, metadata and split, one row per image.

Layout of a prepared output `OUT/`:
    OUT/prepared.json                                   commit record (written last): version, size, files,
                                                        counts, and the earlier versions still kept
    OUT/versions/<version>/shards/split=<s>/*.parquet   the images, in a seeded random row order
    OUT/versions/<version>/manifest.parquet             the manifest the shards were made from
    OUT/versions/<version>/quarantine.parquet           image_index, path, stage, reason of every image not written
Everything of a version lives under its folder and the commit record alone swaps versions in, so readers
(which go through prepared.json) see one whole version or the previous one, never a mix, and never the
files of an unfinished or failed run. A replaced version is kept for a retention period (readers that
started before the swap finish on it), then deleted. Outputs of format 1 (shards/<version>/ and
OUT/manifest.parquet) are still read.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from thorax_ray import storage
from thorax_ray.data.manifest import MANIFEST_SCHEMA, read_manifest
from thorax_ray.data.quarantine import QUARANTINE_COLUMNS
from thorax_ray.data.staged import new_run_id, utc_timestamp, write_record

SHARD_SCHEMA = MANIFEST_SCHEMA.append(pa.field("image", pa.binary()))

COMMIT_FILE = "prepared.json"
SHARD_METADATA_KEY = b"thorax_ray"
PREPARED_FORMAT_VERSION = 2
VERSIONS_DIR = "versions"
ROW_GROUP_ROWS = 256  # small row groups: readers can split files and mix them when shuffling


class PreparedError(ValueError):
    pass


@dataclass
class ShardWrite:
    """What one write task returns to the driver: its files and the rows it did not write."""

    files: list[tuple[str, str, int]]  # (split, path, rows)
    quarantined: pd.DataFrame


def shard_contract(size: int, split_hash: str) -> dict:
    return {"format_version": PREPARED_FORMAT_VERSION, "image_column": "image", "dtype": "uint8", "shape": [size, size],
            "layout": "row-major HxW, one channel", "split_hash": split_hash}


def write_shard_files(frames: Iterable[pd.DataFrame], root: str, version: str, contract: dict, *, task: str,
                      compression: str = "none", endpoint_url: str | None = None) -> ShardWrite:
    """Writes the good rows (`ok`) of `frames` to one Parquet file per split under the version's folder
    (`part-<task>.parquet`) and returns them with the rows not written (quarantined). The write task of
    prepare's datasink (thorax_ray.data.shard_sink) and in-process writers both go through here."""
    fs, base = storage.filesystem(root, endpoint_url=endpoint_url)
    writers: dict[str, tuple[pq.ParquetWriter, object, str, list[int]]] = {}
    quarantined = []
    try:
        for frame in frames:
            quarantined.append(frame.loc[~frame["ok"], list(QUARANTINE_COLUMNS)])
            good = frame.loc[frame["ok"], SHARD_SCHEMA.names]
            for split, rows in good.groupby("split"):
                table = pa.Table.from_pandas(rows.reset_index(drop=True), schema=SHARD_SCHEMA, preserve_index=False)
                if split not in writers:
                    path = f"{base}/{version_dir(version)}/shards/split={split}/part-{task}.parquet"
                    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                    handle = fs.open(path, "wb")
                    schema = SHARD_SCHEMA.with_metadata({SHARD_METADATA_KEY: json.dumps(contract).encode()})
                    writers[split] = (pq.ParquetWriter(handle, schema, compression=compression), handle, path, [0])
                writer, _, _, count = writers[split]
                writer.write_table(table.replace_schema_metadata(writer.schema.metadata), row_group_size=ROW_GROUP_ROWS)
                count[0] += len(table)
    finally:
        for writer, handle, _, _ in writers.values():
            writer.close()
            handle.close()
    files = [(split, storage.to_uri(fs, path), count[0]) for split, (_, _, path, count) in writers.items()]
    frame = pd.concat(quarantined, ignore_index=True) if quarantined else pd.DataFrame(columns=list(QUARANTINE_COLUMNS))
    return ShardWrite(files=files, quarantined=frame)


def new_task_name(index: int) -> str:
    """A write task's part of its file names: its index and a random suffix (retried tasks never collide)."""
    return f"{index:05d}-{uuid.uuid4().hex[:8]}"


def new_version() -> str:
    """`YYYYMMDDTHHMMSSZ-xxxxxx`: UTC start time (sortable) and a random suffix (a run id, thorax_ray.data.staged)."""
    return new_run_id()


def version_dir(version: str) -> str:
    """Folder of a version, relative to the output root."""
    return f"{VERSIONS_DIR}/{version}"


def version_file(root: str, record: dict, name: str) -> str:
    """URI of a version's `manifest.parquet` / `quarantine.parquet` (format 1: beside prepared.json)."""
    if record.get("format_version", 1) < 2:
        return storage.join(root, name)
    return storage.join(root, version_dir(record["version"]), name)


def read_prepared_tables(root: str, record: dict, *, endpoint_url: str | None = None):
    """(manifest, manifest info, quarantine) of the committed version of a prepared output."""
    manifest, info = read_manifest(version_file(root, record, "manifest.parquet"), endpoint_url=endpoint_url)
    quarantine = storage.read_parquet(version_file(root, record, "quarantine.parquet"), endpoint_url=endpoint_url)
    return manifest, info, quarantine.reindex(columns=list(QUARANTINE_COLUMNS))


def read_commit(root: str, *, endpoint_url: str | None = None) -> dict | None:
    """The commit record of a prepared output, None when there is none. Read it once per job (the resolved
    source, thorax_ray.data.inputs, carries it): a `prepare --overwrite` may swap versions in between."""
    return storage.read_json(storage.join(root, COMMIT_FILE), endpoint_url=endpoint_url)


def commit_record(version: str, *, source: str, size: int, split_hash: str, seed: int, files: list[dict],
                  written: dict[str, int], quarantined: dict[str, int], manifest_rows: int,
                  previous_versions: list[dict]) -> dict:
    """The commit record (prepared.json) that swaps `version` in."""
    return {"format_version": PREPARED_FORMAT_VERSION, "version": version,
            "created": utc_timestamp(),
            "source": source, "size": size, "contract": shard_contract(size, split_hash),
            "split_hash": split_hash, "seed": seed, "files": files, "written": written,
            "quarantined": quarantined, "manifest_rows": manifest_rows, "previous_versions": previous_versions}


def write_commit(root: str, record: dict, *, endpoint_url: str | None = None) -> None:
    """Writes prepared.json in one step (local: write + rename; object stores: one PUT)."""
    write_record(storage.join(root, COMMIT_FILE), record, endpoint_url=endpoint_url)


def prepared_files(root: str, splits: Iterable[str] | None = None, *, record: dict | None = None,
                   endpoint_url: str | None = None) -> tuple[dict, list[str]]:
    """The commit record and the shard files of the requested splits (all by default); `record`: the commit
    record already read by this job (read now when not given)."""
    record = record if record is not None else read_commit(root, endpoint_url=endpoint_url)
    if record is None:
        raise PreparedError(f"{root}: no {COMMIT_FILE}; not a prepared dataset (run jobs/prepare.py) or an unfinished one")
    wanted = set(splits) if splits is not None else None
    files = [shard_uri(root, f["path"]) for f in record["files"] if wanted is None or f["split"] in wanted]
    return record, files


def shard_uri(root: str, path: str) -> str:
    """A shard file of the commit record as a URI: format 2 records paths relative to the output (so a
    prepared output can be copied or moved whole); format 1 recorded full paths."""
    if storage.is_remote(path) or path.startswith("/"):
        return path
    return storage.join(root, path)


def relative_to(root: str, uri: str, *, endpoint_url: str | None = None) -> str:
    """`uri` (inside `root`) relative to `root`, with `/` separators."""
    base = storage.filesystem(root, endpoint_url=endpoint_url)[1].rstrip("/") + "/"
    path = uri.split("://", 1)[-1] if storage.is_remote(uri) else uri
    if not path.startswith(base):
        raise PreparedError(f"{uri} is not inside {root}")
    return path[len(base):]


def read_prepared(root: str, splits: Iterable[str] | None = None, *, columns: list[str] | None = None,
                  record: dict | None = None, endpoint_url: str | None = None,
                  task_resources: dict[str, float] | None = None):
    """A Ray dataset over the prepared shards of the given splits of the version `record` (the commit record
    this job resolved; read now when not given); `task_resources`: custom resources each read task asks for
    (the job's node role, thorax_ray.placement)."""
    import ray  # deferred: Ray (absent on the GPU machine)

    record, files = prepared_files(root, splits, record=record, endpoint_url=endpoint_url)
    if not files:
        raise PreparedError(f"{root}: no shard files for splits {sorted(splits or [])}")
    fs, _ = storage.filesystem(root, endpoint_url=endpoint_url)
    paths = [f.split("://", 1)[-1] for f in files]
    # A read task per file, its output split only at the context's target_max_block_size (what
    # scoring.pipeline.largest_read_block counts on). Left to choose, Ray Data's V1 reader split each file
    # into 32 blocks, and on 2 CPUs scoring's one read task then held the CPU that the next step needed
    # while it waited to hand them over: the demo's scoring of 6,000 images stalled 265 s before its first
    # batch (19.7 s in all with one block per file).
    dataset = ray.data.read_parquet(paths, filesystem=fs, override_num_blocks=len(paths),
                                    **({"ray_remote_args": {"resources": task_resources}} if task_resources else {}))
    return dataset.select_columns(columns) if columns else dataset


def write_table(frame: pd.DataFrame, uri: str, *, endpoint_url: str | None = None) -> None:
    fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
    with fs.open(path, "wb") as handle:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), handle)
