"""The manifest-driven Ray Data image pipeline: no listing of storage, bounded memory, one row out
per manifest row (decoded image, or the stage and reason it failed)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import fsspec
import numpy as np
import pandas as pd

from thorax_ray import storage
from thorax_ray.data.decode import PNG_SIGNATURE, DecodeError, decode_png
from thorax_ray.data.read import ReadError, read_bytes

MAX_SIDE = 4096  # stored/decoded image side: beyond the largest NIH original (3,827 px)
PNG_HEADER_BYTES = 24  # signature (8) + IHDR length/type (8) + width (4) + height (4)


@dataclass(frozen=True)
class ImageConfig:
    size: int = 224
    batch_size: int = 32  # rows per map_batches call
    read_attempts: int = 3
    read_backoff_s: float = 0.2
    io_threads: int = 8  # concurrent reads per batch (object stores reward concurrency)
    expected_source_size: int | None = None  # e.g. 1024 for the real data: other sizes are quarantined
    endpoint_url: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.size <= MAX_SIDE:
            raise ValueError(f"image size must be between 1 and {MAX_SIDE} pixels, got {self.size}")
        for name in ("batch_size", "read_attempts", "io_threads", "expected_source_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.read_backoff_s < 0:
            raise ValueError(f"read_backoff_s must be >= 0, got {self.read_backoff_s}")


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if len(data) < PNG_HEADER_BYTES or not data.startswith(PNG_SIGNATURE):
        raise DecodeError("not_png", "no PNG header")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


class ImageLoader:
    """Reads each row's `path`, decodes and resizes it into `image` (raw uint8 bytes of size*size), and
    sets `ok`/`stage`/`reason`; with `sizes`, also `width`/`height` of the decoded PNG before resizing
    (0 for failed rows). Never raises for one bad image."""

    def __init__(self, config: ImageConfig, filesystem: fsspec.AbstractFileSystem | None = None, *,
                 sizes: bool = False):
        self.config = config
        self.filesystem = filesystem
        self.sizes = sizes

    def _fs_and_path(self, uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
        if self.filesystem is not None:
            return self.filesystem, uri.split("://", 1)[-1]
        return storage.filesystem(uri, endpoint_url=self.config.endpoint_url)

    def load_sized(self, uri: str | None) -> tuple[bytes, int, int, str, str]:
        """Returns (pixels, source width, source height, stage, reason); stage and reason are "" on
        success, width and height 0 on failure."""
        if uri is None or (isinstance(uri, float) and np.isnan(uri)):
            return b"", 0, 0, "locate", "missing"
        fs, path = self._fs_and_path(uri)
        try:
            data = read_bytes(fs, path, attempts=self.config.read_attempts, backoff_s=self.config.read_backoff_s)
        except ReadError as error:
            return b"", 0, 0, "read", error.reason
        try:
            pixels = decode_png(data, self.config.size, expected_source_size=self.config.expected_source_size)
            width, height = png_size(data)
        except DecodeError as error:
            return b"", 0, 0, "decode", error.reason
        return pixels.tobytes(), width, height, "", ""

    def load_one(self, uri: str | None) -> tuple[bytes, str, str]:
        """Returns (pixels, stage, reason); stage and reason are "" on success."""
        pixels, _, _, stage, reason = self.load_sized(uri)
        return pixels, stage, reason

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        with ThreadPoolExecutor(max_workers=min(self.config.io_threads, max(1, len(batch)))) as pool:
            results = list(pool.map(self.load_sized, batch["path"].tolist()))
        out = batch.copy()
        names = ("image", "width", "height", "stage", "reason") if self.sizes else ("image", None, None, "stage", "reason")
        for i, name in enumerate(names):
            if name is not None:
                out[name] = [r[i] for r in results]
        out["ok"] = out["reason"] == ""
        return out


def _load_batch(batch: pd.DataFrame, config: ImageConfig, filesystem, sizes: bool = False) -> pd.DataFrame:
    return ImageLoader(config, filesystem, sizes=sizes)(batch)


def manifest_dataset(manifest: pd.DataFrame, *, rows_per_block: int = 256):
    """A Ray dataset over manifest rows (small metadata only; images are read downstream)."""
    import ray

    blocks = [manifest.iloc[i:i + rows_per_block].reset_index(drop=True) for i in range(0, len(manifest), rows_per_block)]
    return ray.data.from_pandas(blocks or [manifest])


def load_images(manifest: pd.DataFrame, config: ImageConfig, *, filesystem=None, num_cpus: float = 1.0,
                sizes: bool = False):
    """Manifest -> Ray dataset of decoded images with `ok`/`stage`/`reason` columns (streaming); with
    `sizes`, also the source PNG's `width`/`height`."""
    return manifest_dataset(manifest, rows_per_block=config.batch_size * 4).map_batches(
        _load_batch, fn_args=(config, filesystem, sizes), batch_size=config.batch_size, batch_format="pandas",
        num_cpus=num_cpus,
    )


def images_to_array(column, size: int) -> np.ndarray:
    """The `image` column (raw uint8 bytes per row: a pyarrow array, or a list/array of bytes) ->
    (n, size, size) uint8 array; zero-copy from a pyarrow binary array."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column, (pa.BinaryArray, pa.LargeBinaryArray)):
        offset_type = np.int64 if isinstance(column, pa.LargeBinaryArray) else np.int32
        offsets = np.frombuffer(column.buffers()[1], dtype=offset_type)[column.offset:column.offset + len(column) + 1]
        if column.null_count == 0 and np.all(np.diff(offsets) == size * size):
            data = np.frombuffer(column.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
            return data.reshape(len(column), size, size)
        column = column.to_pylist()
    return np.frombuffer(b"".join(column), dtype=np.uint8).reshape(len(column), size, size)
