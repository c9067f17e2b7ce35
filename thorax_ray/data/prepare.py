"""One pass from a dataset (local or s3://) to prepared Parquet shards plus a quarantine table."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import pandas as pd

from thorax_ray import storage
from thorax_ray.data.pipeline import ImageConfig, load_images
from thorax_ray.data.shards import (QUARANTINE_COLUMNS, PreparedError, PreparedShardsDatasink, new_version,
                                    read_commit, shard_contract, write_commit, write_table)
from thorax_ray.manifest import build_manifest, write_manifest
from thorax_ray.splits import SPLITS, SplitConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareConfig:
    data: str
    out: str
    metadata: str | None = None  # metadata CSV (default: found by its usual names, thorax_ray.locate)
    image: ImageConfig = field(default_factory=ImageConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    overwrite: bool = False
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

    def format(self) -> str:
        total = sum(self.written.values())
        lines = [f"prepared {self.out} (version {self.version})",
                 "written per split: " + ", ".join(f"{s} {self.written.get(s, 0)}" for s in SPLITS) + f" (total {total})",
                 "quarantined: " + (", ".join(f"{r} {n}" for r, n in sorted(self.quarantined.items())) or "none")
                 + f" (total {sum(self.quarantined.values())})",
                 f"elapsed {self.elapsed_s:.1f} s, {self.manifest_rows / max(self.elapsed_s, 1e-9):.1f} images/s"]
        return "\n".join(lines)


def prepare(config: PrepareConfig, *, filesystem=None) -> PrepareSummary:
    """Writes OUT/shards, OUT/manifest.parquet, OUT/quarantine.parquet and, last, OUT/prepared.json."""
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
    version = new_version()
    size = config.image.size
    rows_per_file = max(64, config.target_file_mb * 2**20 // (size * size))
    sink = PreparedShardsDatasink(config.out, version, shard_contract(size, manifest_summary.split_hash),
                                  rows_per_file=rows_per_file, compression=config.compression,
                                  endpoint_url=endpoint)
    load_images(manifest, config.image, filesystem=filesystem).write_datasink(sink)

    files = [{"split": split, "path": path, "rows": rows} for w in sink.result for split, path, rows in w.files]
    quarantine = pd.concat([w.quarantined for w in sink.result] + [pd.DataFrame(columns=list(QUARANTINE_COLUMNS))],
                           ignore_index=True)
    written = {s: sum(f["rows"] for f in files if f["split"] == s) for s in SPLITS}
    _check_every_row_once(manifest, written, quarantine)

    write_manifest(manifest, storage.join(config.out, "manifest.parquet"), manifest_summary, endpoint_url=endpoint)
    write_table(quarantine, storage.join(config.out, "quarantine.parquet"), endpoint_url=endpoint)
    summary = PrepareSummary(out=config.out, version=version, written=written,
                             quarantined=quarantine["reason"].value_counts().to_dict(),
                             manifest_rows=len(manifest), elapsed_s=time.monotonic() - started)
    write_commit(config.out, {
        "version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": config.data, "size": size, "contract": shard_contract(size, manifest_summary.split_hash),
        "split_hash": manifest_summary.split_hash, "files": files, "written": written,
        "quarantined": summary.quarantined, "manifest_rows": len(manifest),
    }, endpoint_url=endpoint)
    if previous is not None and previous["version"] != version:
        _remove_version(config.out, previous["version"], endpoint)
    summary.elapsed_s = time.monotonic() - started
    return summary


def _check_every_row_once(manifest: pd.DataFrame, written: dict[str, int], quarantine: pd.DataFrame) -> None:
    total = sum(written.values()) + len(quarantine)
    if total != len(manifest) or quarantine["image_index"].duplicated().any():
        raise PreparedError(f"row accounting failed: {sum(written.values())} written + {len(quarantine)} quarantined "
                            f"!= {len(manifest)} manifest rows; nothing was committed")


def _remove_version(root: str, version: str, endpoint: str | None) -> None:
    fs, base = storage.filesystem(root, endpoint_url=endpoint)
    path = f"{base}/shards/{version}"
    if fs.exists(path):
        fs.rm(path, recursive=True)
