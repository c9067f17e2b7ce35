"""A prepared output written in this process, without Ray (the files, layout and commit record that
`thorax_ray.data.prepare` writes), and a counter of commit-record reads for the read-once tests."""
from __future__ import annotations

import sys

from thorax_ray import storage
from thorax_ray.data import shards
from thorax_ray.data.manifest import build_manifest, write_manifest
from thorax_ray.data.pipeline import ImageConfig, ImageLoader
from thorax_ray.data.shards import (commit_record, new_task_name, new_version, relative_to, shard_contract,
                                    version_dir, write_commit, write_shard_files, write_table)
from thorax_ray.data.splits import SPLITS


def prepare_here(data: str, out: str, *, size: int = 32) -> dict:
    """`data` (a dataset in the NIH layout) prepared into `out` at `size`; returns the commit record."""
    manifest, summary = build_manifest(data)
    version = new_version()
    loaded = ImageLoader(ImageConfig(size=size))(manifest.reset_index(drop=True))
    wrote = write_shard_files([loaded], out, version, shard_contract(size, summary.split_hash), task=new_task_name(0))
    files = [{"split": split, "path": relative_to(out, path), "rows": rows} for split, path, rows in wrote.files]
    folder = storage.join(out, version_dir(version))
    write_manifest(manifest, storage.join(folder, "manifest.parquet"), summary)
    write_table(wrote.quarantined, storage.join(folder, "quarantine.parquet"))
    record = commit_record(version, source=data, size=size, split_hash=summary.split_hash, seed=0, files=files,
                           written={s: sum(f["rows"] for f in files if f["split"] == s) for s in SPLITS},
                           quarantined=wrote.quarantined["reason"].value_counts().to_dict(),
                           manifest_rows=len(manifest), previous_versions=[])
    write_commit(out, record)
    return record


def count_commit_reads(monkeypatch) -> list[str]:
    """Every call of `read_commit` from now on, wherever the package imported it: the roots it read."""
    calls: list[str] = []
    original = shards.read_commit

    def counted(root, **kwargs):
        calls.append(root)
        return original(root, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith("thorax_ray") and getattr(module, "read_commit", None) is original:
            monkeypatch.setattr(module, "read_commit", counted)
    return calls


class FakeDataset:
    """Stands in for a Ray dataset: remembers what was asked of it."""

    def __init__(self, paths):
        self.paths = list(paths)

    def select_columns(self, columns):
        return self

    def limit(self, rows):
        return self

    def map_batches(self, *args, **kwargs):
        return self


def fake_ray_reads(monkeypatch) -> list[list[str]]:
    """Replaces `ray.data.read_parquet` (and `ray.put`) so shard reads run without a cluster; returns the
    path lists each read was asked for."""
    import ray  # deferred: only the tests that fake its reads need it
    import ray.data

    reads: list[list[str]] = []

    def read_parquet(paths, **kwargs):
        reads.append(list(paths))
        return FakeDataset(paths)

    monkeypatch.setattr(ray.data, "read_parquet", read_parquet)
    monkeypatch.setattr(ray, "put", lambda value: value)
    return reads
