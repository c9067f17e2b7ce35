"""The Ray Data datasink of `prepare`: each write task writes its good rows to Parquet shards (one file
per split, thorax_ray.data.shards.write_shard_files) and hands quarantined rows back to the driver.
Kept apart from `shards` so that reading prepared shards needs no Ray."""
from __future__ import annotations

from collections.abc import Iterable

from ray.data import Datasink
from ray.data.block import BlockAccessor

from thorax_ray.data.shards import ShardWrite, new_task_name, write_shard_files


class PreparedShardsDatasink(Datasink):
    """Ray Data datasink that writes good rows to Parquet files (one per split per write task) and
    hands quarantined rows back to the driver."""

    def __init__(self, root: str, version: str, contract: dict, *, rows_per_file: int, compression: str = "none",
                 endpoint_url: str | None = None):
        self.root = root
        self.compression = compression
        self.version = version
        self.contract = contract
        self.rows_per_file = rows_per_file
        self.endpoint_url = endpoint_url
        self.result: list[ShardWrite] = []

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks: Iterable, ctx) -> ShardWrite:
        frames = (BlockAccessor.for_block(block).to_pandas() for block in blocks)
        return write_shard_files(frames, self.root, self.version, self.contract, task=new_task_name(ctx.task_idx),
                                 compression=self.compression, endpoint_url=self.endpoint_url)

    def on_write_complete(self, write_result) -> None:
        self.result = list(write_result.write_returns)
