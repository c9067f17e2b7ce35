"""The Ray Data datasink of a scoring run: each write task streams its scored rows into one Parquet data
file in the run's own folder of the scores table (`OUT/scores/batch_date=.../run_id=<run_id>/`) and hands
its failed rows and compute time back to the driver, which commits the files to the Delta table in one
transaction (thorax_ray.scoring.output.commit_scores). Until then no Delta reader sees them. Ray Data's own
`write_delta` commits too, but cannot hand back the quarantined rows and timings nor commit under OUT's
lease with the run's record. Kept apart from `output` so that reading and writing scores needs no Ray."""
from __future__ import annotations

import uuid
from collections.abc import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data import Datasink
from ray.data.block import BlockAccessor

from thorax_ray import storage
from thorax_ray.scoring.output import SCORES_DIR, ScoresWrite, data_schema, partition


class ScoresDatasink(Datasink):
    """Writes the scored rows of each write task to one Parquet file in the run's folder of the scores table
    (the columns of `schema` less batch_date, which is the table's partition) and hands failed rows (and the
    scorer's compute time) back to the driver."""

    def __init__(self, out: str, run_id: str, batch_date: str, schema: pa.Schema, metadata: dict[str, str], *,
                 rows_per_file: int = 8192, compression: str = "zstd", endpoint_url: str | None = None):
        self.out = out
        self.run_id = run_id
        self.batch_date = batch_date
        self.schema = data_schema(schema).with_metadata(metadata)
        self.rows_per_file = rows_per_file
        self.compression = compression
        self.endpoint_url = endpoint_url
        self.result: list[ScoresWrite] = []

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks: Iterable, ctx) -> ScoresWrite:
        fs, base = storage.filesystem(self.out, endpoint_url=self.endpoint_url)
        names = self.schema.names
        writer = handle = None
        folder = f"{base}/{SCORES_DIR}/{partition(self.batch_date, self.run_id)}"
        path = f"{folder}/part-{ctx.task_idx:05d}-{uuid.uuid4().hex[:8]}.parquet"
        rows, compute_s, model_s, quarantined, sources, unknown_size = 0, 0.0, 0.0, [], {}, 0
        try:
            for block in blocks:
                table = BlockAccessor.for_block(block).to_arrow()
                if table.num_rows == 0:
                    continue
                compute_s += float(pc.sum(table.column("_compute_s")).as_py() or 0.0)
                model_s += float(pc.sum(table.column("_model_s")).as_py() or 0.0)
                ok = table.column("ok")
                bad = table.filter(pc.invert(ok))
                if bad.num_rows:
                    quarantined.append(bad.select(["image_index", "path", "stage", "reason"]).to_pandas())
                good = table.filter(ok).select(names)
                if good.num_rows == 0:
                    continue
                if writer is None:
                    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                    handle = fs.open(path, "wb")
                    writer = pq.ParquetWriter(handle, self.schema, compression=self.compression)
                writer.write_table(good.cast(self.schema), row_group_size=self.rows_per_file)
                rows += good.num_rows
                for entry in pc.value_counts(good.column("metadata_source").fill_null("none")).to_pylist():
                    sources[entry["values"]] = sources.get(entry["values"], 0) + entry["counts"]
                if "boxes" in names:
                    unknown_size += good.column("width").null_count
        finally:
            if writer is not None:
                writer.close()
            if handle is not None:
                handle.close()
        files = []
        if writer is not None:
            files.append((storage.to_uri(fs, path), rows, int(fs.size(path))))
        frame = (pd.concat(quarantined, ignore_index=True) if quarantined
                 else pd.DataFrame({c: pd.Series(dtype=object) for c in ("image_index", "path", "stage", "reason")}))
        return ScoresWrite(files=files, quarantined=frame, compute_s=compute_s, model_s=model_s,
                           metadata_sources=sources, unknown_size=unknown_size)

    def on_write_complete(self, write_result) -> None:
        self.result = list(write_result.write_returns)
