"""Where training and evaluation rows come from: prepared shards, raw PNGs through the Ray Data image
pipeline, or (for the metadata network) the manifest alone, with no image read at all. The dataset is
resolved once (thorax_ray.data.inputs); a prepared output's commit record travels inside the source, so its
shards are read from the version the job resolved."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from thorax_ray.data.inputs import PATIENT_METADATA, InputSource, resolve_dataset
from thorax_ray.data.pipeline import DEFAULT_IMAGE_SIZE, ImageConfig, load_images, manifest_dataset
from thorax_ray.data.shards import read_prepared
from thorax_ray.data.splits import SplitConfig
from thorax_ray.labels import FINDING_COLUMNS

log = logging.getLogger(__name__)

METADATA_COLUMNS = ("image_index", *PATIENT_METADATA, "split")
TRAINING_ROW_COLUMNS = (*METADATA_COLUMNS, *FINDING_COLUMNS)


@dataclass(frozen=True)
class DataConfig:
    data: str = "data/demo"  # dataset folder/URI (raw PNGs or metadata only) or a prepared output (has prepared.json)
    size: int = DEFAULT_IMAGE_SIZE  # model input side (512: 16x16 maps of 64-px cells for the torchvision CNNs)
    batch_size: int | None = None  # per worker; default by model kind: DEFAULT_BATCH_SIZE
    eval_batch_size: int = 64
    limit: int | None = None  # at most this many rows per split (smoke runs)
    val_cache_mb: int = 1024  # validation rows kept in the object store (read once for the run) when they fit
    cache_train_mb: int = 2048  # training rows materialized once in the object store when they fit (0: always stream)
    # Training rows are shuffled every epoch: the block order (reseeded each epoch from run.seed) and, within a
    # worker, a buffer of this many rows (0: block order only).
    shuffle_buffer_rows: int = 2048
    shuffle: bool = True  # False: training rows in the manifest's (or shards') order every epoch, for ablations
    s3_endpoint: str | None = None
    # How a raw dataset's rows are split when its manifest is built here (a prepared output keeps the split
    # prepare made): kind "official" (NIH's lists when present) or "random" (patients, these fractions and seed).
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        if (not 16 <= self.size <= 2048 or (self.batch_size is not None and self.batch_size < 1)
                or self.eval_batch_size < 1 or self.shuffle_buffer_rows < 0):
            raise ValueError(f"bad data config: size={self.size} (16..2048), batch_size={self.batch_size}, "
                             f"eval_batch_size={self.eval_batch_size} (>= 1), shuffle_buffer_rows={self.shuffle_buffer_rows} (>= 0)")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 row per split (or unset), got {self.limit}")
        if self.val_cache_mb < 0 or self.cache_train_mb < 0:
            raise ValueError(f"cache sizes must be >= 0 MB, got val_cache_mb={self.val_cache_mb}, "
                             f"cache_train_mb={self.cache_train_mb}")


@dataclass(frozen=True)
class DataSource:
    """One dataset (raw or prepared) resolved once on the driver (`input`, thorax_ray.data.inputs)."""

    config: DataConfig
    input: InputSource

    @property
    def manifest(self) -> pd.DataFrame:
        """The rows that can be used (quarantined rows removed for prepared data)."""
        return self.input.rows

    @property
    def split_hash(self) -> str:
        return self.input.split_hash

    @property
    def prepared(self) -> dict | None:
        """The commit record when reading prepared shards (read once, when the source was resolved)."""
        return self.input.prepared

    @property
    def kind(self) -> str:
        """"prepared" | "raw"."""
        return "prepared" if self.input.kind == "prepared" else "raw"

    @property
    def data_origin(self) -> str:
        return self.input.data_origin

    @property
    def stored_size(self) -> int:
        return self.prepared["size"] if self.prepared else self.config.size

    def rows(self, split: str) -> pd.DataFrame:
        """The split's rows; with `limit`, its first rows in manifest order: exactly the rows `dataset` reads and
        `label_counts` counts (class weights come from the rows trained on)."""
        rows = self.manifest[self.manifest["split"] == split]
        return rows.head(self.config.limit) if self.config.limit else rows

    def label_counts(self, split: str) -> tuple[np.ndarray, int]:
        rows = self.rows(split)
        return rows[list(FINDING_COLUMNS)].to_numpy().sum(axis=0), len(rows)

    def dataset(self, split: str, *, images: bool, shuffle_seed: int | None = None,
                task_resources: dict[str, float] | None = None):
        """A Ray dataset of the split's rows; with `images`, an `image` column of raw uint8 bytes. With
        `shuffle_seed`, rows read from the manifest come in a seeded random order instead of the CSV's
        (sorted by patient); prepared shards are already stored in one. `task_resources`: custom resources
        each read/decode task asks for (the job's node role, thorax_ray.placement)."""
        remote = {"resources": task_resources} if task_resources else {}
        rows = self.rows(split)
        if shuffle_seed is not None:
            rows = rows.sample(frac=1.0, random_state=shuffle_seed)
        if not images:
            return manifest_dataset(rows[list(TRAINING_ROW_COLUMNS)].reset_index(drop=True))
        if self.kind == "prepared":
            ds = read_prepared(self.config.data, [split], columns=[*TRAINING_ROW_COLUMNS, "image"],
                               record=self.prepared, endpoint_url=self.config.s3_endpoint,
                               task_resources=task_resources)
            # Shards hold rows in their own (seeded) order: with a limit, keep the rows `rows` names rather
            # than whichever come first (Ray's limit() takes the first blocks to arrive).
            return (ds.map_batches(RowsNamed(rows["image_index"]), batch_format="pyarrow", **remote)
                    if self.config.limit else ds)
        if rows["path"].isna().all():
            raise ValueError(f"{self.config.data}: the {split} split has no images; only the metadata model (mlp) "
                             "can train on a metadata-only dataset")
        image_config = ImageConfig(size=self.config.size, endpoint_url=self.config.s3_endpoint)
        return load_images(rows.reset_index(drop=True), image_config, resources=task_resources).map_batches(
            _keep_decoded, batch_format="pandas", batch_size=None, **remote)


class RowsNamed:
    """A Ray Data batch filter keeping the rows whose image_index is one of `names`."""

    def __init__(self, names) -> None:
        self.names = pa.array(sorted(set(names)), type=pa.string())

    def __call__(self, table: pa.Table) -> pa.Table:
        return table.filter(pc.is_in(table["image_index"], value_set=self.names))


def _keep_decoded(batch: pd.DataFrame) -> pd.DataFrame:
    return batch.loc[batch["ok"], [*TRAINING_ROW_COLUMNS, "image"]]


def open_source(config: DataConfig) -> DataSource:
    """Resolves `config.data`: a prepared output (prepared.json) or a dataset folder/prefix."""
    source = DataSource(config, resolve_dataset(config.data, endpoint_url=config.s3_endpoint, split=config.split))
    made = (source.input.split or {}).get("kind")
    if source.kind == "prepared" and config.split.kind == "random" and made == "official":
        raise ValueError(f"{config.data}: prepared on NIH's official split, but the config asks for a random patient "
                         "split (data.split.kind random): prepare again with --split random, or pass --split-kind "
                         "official")
    return source
