"""One pass from a dataset (local or s3://) to prepared Parquet shards plus a quarantine table."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import pandas as pd

from thorax_ray import console, storage
from thorax_ray.cluster import DEFAULT_PLACEMENT_TIMEOUT_S, ClusterCapacity, check_shared_storage, cluster_capacity
from thorax_ray.data.manifest import build_manifest, write_manifest
from thorax_ray.data.pipeline import ImageConfig, load_images
from thorax_ray.data.quarantine import QUARANTINE_COLUMNS
from thorax_ray.data.shard_sink import PreparedShardsDatasink
from thorax_ray.data.shards import (COMMIT_FILE, VERSIONS_DIR, PreparedError, commit_record, new_version, read_commit,
                                    relative_to, shard_contract, version_dir, write_table)
from thorax_ray.data.splits import SPLITS, SplitConfig
from thorax_ray.data.staged import StagedRun, staged_run
from thorax_ray.lease import DEFAULT_TTL_S
from thorax_ray.placement import cpu_task_placement, custom_resources, wait_until_placed
from thorax_ray.progress import StageProgress

log = logging.getLogger(__name__)
DECODE_CPUS = 1.0  # per read/decode/write task


@dataclass(frozen=True)
class PrepareConfig:
    data: str
    out: str
    metadata: str | None = None  # metadata CSV (default: found by its usual names, thorax_ray.data.locate)
    image: ImageConfig = field(default_factory=ImageConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    overwrite: bool = False
    keep_previous_hours: float = 72.0  # a replaced version stays readable this long (jobs reading it finish)
    seed: int = 0  # of the shards' random row order
    lock_ttl_s: float = DEFAULT_TTL_S  # a crashed prepare's lease is taken over after this long without renewal
    #                                    (heartbeat every ttl/3)
    shared_fs: bool = False  # local --data/--out paths are on a filesystem every node mounts
    placement_timeout_s: float = DEFAULT_PLACEMENT_TIMEOUT_S  # exit 75 when no CPU node is placed by then (0: never)
    target_file_mb: int = 256
    compression: str = "none"  # 8-bit radiograph pixels barely compress with fast codecs; "zstd"/"lz4" to trade CPU for bytes


@dataclass
class PrepareSummary:
    out: str
    version: str
    written: dict[str, int]
    quarantined: dict[str, int]
    manifest_rows: int
    elapsed_s: float
    removed_versions: list[str] = field(default_factory=list)

    def format(self) -> str:
        total = sum(self.written.values())
        lines = [f"prepared {self.out} (version {self.version})",
                 "written per split: " + ", ".join(f"{s} {self.written.get(s, 0)}" for s in SPLITS) + f" (total {total})",
                 "quarantined: " + (", ".join(f"{r} {n}" for r, n in sorted(self.quarantined.items())) or "none")
                 + f" (total {sum(self.quarantined.values())})",
                 f"elapsed {self.elapsed_s:.1f} s, {self.manifest_rows / max(self.elapsed_s, 1e-9):.1f} images/s"]
        if self.removed_versions:
            lines.append(f"removed {len(self.removed_versions)} old or unfinished version(s): "
                         + ", ".join(self.removed_versions[:5]))
        return "\n".join(lines)


def prepare(config: PrepareConfig, *, filesystem=None, capacity: ClusterCapacity | None = None) -> PrepareSummary:
    """Writes version V under OUT/versions/V/ (shards, manifest, quarantine) and, last, OUT/prepared.json,
    which swaps V in; holds OUT's lease meanwhile, so two prepares never write one output at once, and
    removes V if it fails before that (thorax_ray.data.staged, as scoring runs do).
    `capacity` (default: read now): local paths are refused on a multi-node cluster before any work."""
    endpoint = config.image.endpoint_url
    capacity = capacity or cluster_capacity()
    for uri, what in ((config.data, "--data"), (config.out, "--out")):
        check_shared_storage(uri, capacity, what=what, shared_fs=config.shared_fs)
    placement = cpu_task_placement("read/decode/write tasks", cpus=DECODE_CPUS, capacity=capacity)
    console.say("prepare", placement.describe())
    wait_until_placed(placement, timeout_s=config.placement_timeout_s, stage="prepare")
    out_fs, out_path = storage.filesystem(config.out, endpoint_url=endpoint)
    new_out = not storage.is_remote(config.out) and not out_fs.exists(out_path)
    version = new_version()
    try:
        with staged_run(config.out, storage.join(config.out, version_dir(version)), ttl_s=config.lock_ttl_s,
                        about={"job": "prepare", "source": config.data}, endpoint_url=endpoint) as staged:
            return _prepare_locked(config, staged, version, filesystem, placement.ask)
    except BaseException:
        if new_out:  # a failed first prepare leaves no empty OUT behind (the lease and version are gone)
            _remove_empty_folders(out_path)
        raise


def _prepare_locked(config: PrepareConfig, staged: StagedRun, version: str, filesystem,
                    task_resources: dict[str, float]) -> PrepareSummary:
    """The part of a prepare that holds OUT's lease: version `version` written under its folder, then committed;
    `staged` removes that folder when anything fails before the commit (an error, Ctrl-C or SIGTERM)."""
    started = time.monotonic()
    endpoint = config.image.endpoint_url
    previous = read_commit(config.out, endpoint_url=endpoint)
    if previous is not None and not config.overwrite:
        raise PreparedError(
            f"{config.out} already holds a prepared dataset (version {previous['version']}, "
            f"{sum(previous['written'].values())} images); pass --overwrite to replace it atomically"
        )
    manifest, manifest_summary = build_manifest(config.data, config.split, metadata_csv=config.metadata,
                                                endpoint_url=endpoint)
    size = config.image.size
    files, written, quarantine = _write_version(config, version, manifest, manifest_summary, filesystem,
                                                task_resources)
    summary = PrepareSummary(out=config.out, version=version, written=written,
                             quarantined=quarantine["reason"].value_counts().to_dict(),
                             manifest_rows=len(manifest), elapsed_s=time.monotonic() - started)
    kept = _kept_versions(previous, config.keep_previous_hours)
    staged.commit(COMMIT_FILE, commit_record(version, source=config.data, size=size,
                                             split_hash=manifest_summary.split_hash, seed=config.seed, files=files,
                                             written=written, quarantined=summary.quarantined,
                                             manifest_rows=len(manifest), previous_versions=kept))
    summary.removed_versions = remove_unused_versions(config.out, keep={version, *(k["version"] for k in kept)},
                                                      endpoint_url=endpoint)
    summary.elapsed_s = time.monotonic() - started
    return summary


def _write_version(config: PrepareConfig, version: str, manifest: pd.DataFrame, manifest_summary, filesystem,
                   task_resources: dict[str, float]):
    """Shards, manifest and quarantine of `version` under OUT/versions/<version>/ (not committed yet);
    returns (files of the commit record, rows written per split, quarantine)."""
    endpoint = config.image.endpoint_url
    size = config.image.size
    rows_per_file = max(64, config.target_file_mb * 2**20 // (size * size))
    sink = PreparedShardsDatasink(config.out, version, shard_contract(size, manifest_summary.split_hash),
                                  rows_per_file=rows_per_file, compression=config.compression,
                                  endpoint_url=endpoint)
    # A seeded random row order: the CSV is sorted by patient and follow-up, and training mixes rows only
    # within a shuffle buffer, so shards in CSV order would give batches of one or two patients.
    shuffled = manifest.sample(frac=1.0, random_state=config.seed).reset_index(drop=True)
    with StageProgress("prepare", total=len(shuffled)) as progress:
        load_images(shuffled, config.image, filesystem=filesystem, progress=progress.counter, num_cpus=DECODE_CPUS,
                    resources=custom_resources(task_resources)).write_datasink(sink)
        progress.finish(sum(rows for w in sink.result for _, _, rows in w.files)
                        + sum(len(w.quarantined) for w in sink.result))
    files = [{"split": split, "path": relative_to(config.out, path, endpoint_url=endpoint), "rows": rows}
             for w in sink.result for split, path, rows in w.files]
    quarantine = pd.concat([w.quarantined for w in sink.result] + [pd.DataFrame(columns=list(QUARANTINE_COLUMNS))],
                           ignore_index=True)
    written = {s: sum(f["rows"] for f in files if f["split"] == s) for s in SPLITS}
    _check_every_row_once(manifest, written, quarantine)
    folder = storage.join(config.out, version_dir(version))
    write_manifest(manifest, storage.join(folder, "manifest.parquet"), manifest_summary, endpoint_url=endpoint)
    write_table(quarantine, storage.join(folder, "quarantine.parquet"), endpoint_url=endpoint)
    return files, written, quarantine


def _remove_empty_folders(path: str) -> None:
    """Removes `path` and the folders below it, bottom up, while they are empty."""
    for folder, _, _ in sorted(os.walk(path), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(folder)
        except OSError:  # not empty, or gone
            pass


def _kept_versions(previous: dict | None, keep_hours: float) -> list[dict]:
    """The versions the new commit record keeps: the one it replaces (from now) and earlier replaced ones
    still inside the retention period."""
    if previous is None:
        return []
    now = time.time()
    replaced = {"version": previous["version"], "format_version": previous.get("format_version", 1),
                "replaced_at": now}
    earlier = [v for v in previous.get("previous_versions", []) if now - v["replaced_at"] < keep_hours * 3600]
    return [replaced, *earlier]


def remove_unused_versions(root: str, *, keep: set[str], endpoint_url: str | None = None) -> list[str]:
    """Deletes every version folder of `root` not in `keep`: versions past their retention and folders of
    runs that never committed (the caller holds the output's lease, so no prepare is writing one now).
    Format-1 folders (shards/<version>) are handled alike. Returns the removed versions."""
    fs, base = storage.filesystem(root, endpoint_url=endpoint_url)
    removed = []
    for parent in (f"{base}/{VERSIONS_DIR}", f"{base}/shards"):
        try:
            entries = fs.ls(parent, detail=True)
        except FileNotFoundError:
            continue
        for entry in entries:
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if entry.get("type") == "directory" and name not in keep:
                fs.rm(entry["name"], recursive=True)
                removed.append(name)
    if removed:
        log.info("removed %d unused prepared version(s) of %s: %s", len(removed), root, removed[:5])
    return removed


def _check_every_row_once(manifest: pd.DataFrame, written: dict[str, int], quarantine: pd.DataFrame) -> None:
    total = sum(written.values()) + len(quarantine)
    if total != len(manifest) or quarantine["image_index"].duplicated().any():
        raise PreparedError(f"row accounting failed: {sum(written.values())} written + {len(quarantine)} quarantined "
                            f"!= {len(manifest)} manifest rows; nothing was committed")
