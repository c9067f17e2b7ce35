"""Data for `bench/gpu.py` without Ray: a synthetic dataset in the NIH layout, prepared into the same
Parquet shards `jobs/prepare.py` writes (same schema, contract, commit record and row groups), decoded in
a local process pool, and a stream of training batches read from those shards with pyarrow alone.

    prepared = prepare_in_process("/tmp/raw", "/tmp/prepared", size=224, workers=15)
    for table in shard_tables(prepared_files(prepared, ["train"])[1], batch_size=128, columns=[...]):
        ...
"""
from __future__ import annotations

import multiprocessing
import random
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thorax_ray import storage
from thorax_ray.data.manifest import build_manifest, write_manifest
from thorax_ray.data.pipeline import ImageConfig, ImageLoader
from thorax_ray.data.shards import (PreparedError, commit_record, new_task_name, new_version, relative_to,
                                    shard_contract, version_dir, write_commit, write_shard_files, write_table)
from thorax_ray.data.splits import SPLITS
from thorax_ray.labels import FINDING_COLUMNS

CHUNK_ROWS = 256  # manifest rows per decode task


def prepare_in_process(data: str, out: str, *, size: int, workers: int, seed: int = 0) -> dict:
    """`data` (a dataset in the NIH layout) -> a prepared output at `out`, as `jobs/prepare.py` writes it but
    without Ray or a lease (a fresh folder of the benchmark's own); returns the commit record."""
    manifest, summary = build_manifest(data)
    shuffled = manifest.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # as prepare orders rows
    chunks = [shuffled.iloc[i:i + CHUNK_ROWS] for i in range(0, len(shuffled), CHUNK_ROWS)]
    version = new_version()
    loader = ImageLoader(ImageConfig(size=size))
    # forkserver: the decode processes never inherit this process's threads (torch's, CUDA's)
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=context) as pool:
        written_files = write_shard_files(pool.map(loader, chunks), out, version,
                                          shard_contract(size, summary.split_hash), task=new_task_name(0))
    files = [{"split": split, "path": relative_to(out, path), "rows": rows} for split, path, rows in written_files.files]
    written = {s: sum(f["rows"] for f in files if f["split"] == s) for s in SPLITS}
    quarantine = written_files.quarantined
    if sum(written.values()) + len(quarantine) != len(manifest):
        raise PreparedError(f"{out}: {sum(written.values())} written + {len(quarantine)} quarantined != "
                            f"{len(manifest)} manifest rows")
    folder = storage.join(out, version_dir(version))
    write_manifest(manifest, storage.join(folder, "manifest.parquet"), summary)
    write_table(quarantine, storage.join(folder, "quarantine.parquet"))
    record = commit_record(version, source=data, size=size, split_hash=summary.split_hash, seed=seed, files=files,
                           written=written, quarantined=quarantine["reason"].value_counts().to_dict(),
                           manifest_rows=len(manifest), previous_versions=[])
    write_commit(out, record)
    return record


def shard_tables(files: list[str], *, batch_size: int, columns: list[str], seed: int = 0) -> Iterator[pa.Table]:
    """Endless stream of `batch_size`-row tables read from the shard files with pyarrow, epoch after epoch,
    files in a new random order each epoch (a file's last partial batch is dropped, as `drop_last`)."""
    order = list(files)
    rng = random.Random(seed)
    while True:
        rng.shuffle(order)
        for uri in order:
            fs, path = storage.filesystem(uri)
            with fs.open(path, "rb") as handle:
                for record_batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_size, columns=columns):
                    if record_batch.num_rows == batch_size:
                        yield pa.Table.from_batches([record_batch])


def label_counts(files: list[str]) -> tuple[np.ndarray, int]:
    """Positives per finding and rows of the shard files (what the class-balanced loss is built from)."""
    tables = []
    for uri in files:
        fs, path = storage.filesystem(uri)
        with fs.open(path, "rb") as handle:
            tables.append(pq.read_table(handle, columns=list(FINDING_COLUMNS)))
    table = pa.concat_tables(tables)
    counts = np.array([int(np.asarray(table.column(c).to_numpy(zero_copy_only=False)).sum()) for c in FINDING_COLUMNS])
    return counts, table.num_rows
