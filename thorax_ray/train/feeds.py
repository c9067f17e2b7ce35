"""Where a training worker's batches come from, each epoch: its part of the training rows (shuffled every
epoch, the same number of batches on every worker, as DDP needs) and its share of the validation rows
(every validation row on exactly one worker, read once an epoch in total; the loop gathers the predictions).

- `DatasetFeed`: rows from Ray Data (prepared shards or decoded images; any model that reads images).
- `TensorFeed`: models without images (the metadata MLP). The driver encodes the features of every row
  once (`encode_tables`, ~1 MB per 100k rows); workers slice tensors, with no per-row or per-batch Python
  work and no Ray Data pipeline per epoch.
"""
from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from thorax_ray.accel import FastPath, prefetch_to_device
from thorax_ray.data.preprocess import Batch, batch_from_arrow
from thorax_ray.labels import FINDING_COLUMNS
from thorax_ray.train.config import TrainConfig


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of a worker's augmentation generator and shuffle buffer in one epoch."""
    return (seed * 1_000_003 + epoch * 7919 + rank) % 2**31


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of torch's global RNGs (dropout) on one worker in one epoch: a stream apart from `epoch_seed`'s,
    different on every rank, and a pure function of (seed, epoch, rank), so a resumed epoch draws the same."""
    digest = hashlib.sha256(f"torch-global:{seed}:{epoch}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**63


def validation_share(names: list[str], rank: int, world: int) -> np.ndarray:
    """Which validation rows a worker scores: a stable hash of the image name, so each row is on exactly one
    worker at any world size (and on the same one every epoch)."""
    return np.fromiter((zlib.crc32(name.encode()) % world == rank for name in names), dtype=bool, count=len(names))


def epoch_batches(shard, config: TrainConfig, *, epoch: int, rank: int, prefetch_batches: int = 2):
    """The worker's training batches of one epoch (pyarrow tables): rows mixed in a shuffle buffer seeded
    from (run seed, epoch, rank), so the order differs every epoch and is the same for the same seed; the
    last partial batch is dropped (different rows every epoch)."""
    buffer = (config.data.shuffle_buffer_rows if config.data.shuffle else 0) or None
    return shard.iter_batches(batch_size=config.batch_size, batch_format="pyarrow", drop_last=True,
                              prefetch_batches=prefetch_batches, local_shuffle_buffer_size=buffer,
                              local_shuffle_seed=None if buffer is None else epoch_seed(config.run.seed, epoch, rank))


class DatasetFeed:
    """Batches from the Ray Train dataset shards "train" and "val", both split between the workers
    (train.train.ingest_config: every validation row on exactly one worker, read once an epoch in total; the
    driver keeps them in the object store when they fit `data.val_cache_mb`). No worker keeps its share
    locally: a split is one stream that every worker reads each epoch, so a worker skipping it would stall
    the others."""

    def __init__(self, config: TrainConfig, *, stored_size: int, features, spec, fast: FastPath, rank: int):
        import ray.train  # deferred: Ray (absent on the GPU machine)

        self.config, self.fast, self.rank = config, fast, rank
        self.make = lambda table: batch_from_arrow(table, stored_size=stored_size,
                                                   features=features if spec.uses_metadata else None,
                                                   images=spec.uses_images)
        self.train = ray.train.get_dataset_shard("train")
        self.val = ray.train.get_dataset_shard("val")

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        """Training batches with their tensors on the device (copied ahead of the compute on GPU)."""
        tables = epoch_batches(self.train, self.config, epoch=epoch, rank=self.rank,
                               prefetch_batches=self.fast.prefetch_batches)
        return prefetch_to_device(tables, self.fast, make=self.make)

    def val_batches(self) -> Iterator[Batch]:
        tables = self.val.iter_batches(batch_size=self.config.data.eval_batch_size, batch_format="pyarrow")
        return (self.make(table) for table in tables)


@dataclass(frozen=True)
class EncodedRows:
    """Rows of one split as arrays: image names, encoded features (N, F) float32, labels (N, 14) float32."""

    names: list[str]
    features: np.ndarray
    labels: np.ndarray


def encode_rows(frame, features) -> EncodedRows:
    """Manifest rows -> EncodedRows (once, on the driver; vectorised)."""
    labels = frame[list(FINDING_COLUMNS)].to_numpy(dtype=np.float32)
    return EncodedRows(list(frame["image_index"]), features.encode(frame), labels)


class TensorFeed:
    """Batches sliced from tensors of encoded rows (`{"train": EncodedRows, "val": EncodedRows}`)."""

    def __init__(self, config: TrainConfig, rows: dict, *, device: torch.device, rank: int, world: int):
        self.config, self.device, self.rank, self.world = config, device, rank, world
        train = rows["train"]
        self.train_x, self.train_y = torch.from_numpy(train.features), torch.from_numpy(train.labels)
        val = rows["val"]
        share = np.flatnonzero(validation_share(val.names, rank, world))
        self.val_names = [val.names[i] for i in share]
        self.val_x, self.val_y = torch.from_numpy(val.features[share]), torch.from_numpy(val.labels[share])

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        """One permutation per epoch (the same on every worker, from the run's seed; the rows' order when
        `data.shuffle` is off), dealt to the workers in equal parts; whole batches only."""
        n = len(self.train_y)
        seed = epoch_seed(self.config.run.seed, epoch, 0)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if self.config.data.shuffle
                 else torch.arange(n))
        mine = order[self.rank:n - n % self.world:self.world]
        size = self.config.batch_size
        for start in range(0, len(mine) - size + 1, size):
            index = mine[start:start + size]
            yield Batch(image_index=[], labels=self.train_y[index].to(self.device),
                        images=None, features=self.train_x[index].to(self.device))

    def val_batches(self) -> Iterator[Batch]:
        size = self.config.data.eval_batch_size
        for start in range(0, len(self.val_y), size):
            part = slice(start, start + size)
            yield Batch(image_index=self.val_names[part], labels=self.val_y[part], images=None,
                        features=self.val_x[part])

