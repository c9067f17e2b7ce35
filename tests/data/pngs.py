"""Builds PNG files in every variant the real data has, plus broken ones."""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image


def gray_image(size: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    return np.clip(120 + 80 * np.sin(6 * x) * np.cos(4 * y) + rng.normal(0, 8, (size, size)), 0, 255).astype(np.uint8)


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def variants(gray: np.ndarray) -> dict[str, bytes]:
    """The same picture as 8-bit gray, RGB, RGBA and 16-bit gray PNGs."""
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full(gray.shape + (1,), 255, np.uint8)], axis=2)
    sixteen = gray.astype(np.uint16) * 257
    buffer = io.BytesIO()
    Image.fromarray(sixteen).save(buffer, format="PNG")
    return {"gray": png_bytes(gray), "rgb": png_bytes(rgb), "rgba": png_bytes(rgba), "gray16": buffer.getvalue()}


def write_bad_and_good(folder: str | os.PathLike, size: int = 96) -> dict[str, str]:
    """Writes good variants and broken files; returns image name -> expected quarantine reason ('' = good)."""
    os.makedirs(folder, exist_ok=True)
    files = {f"{i + 1:08d}_000.png": data for i, data in enumerate(variants(gray_image(size)).values())}
    gray = variants(gray_image(size))["gray"]
    files["00000011_000.png"] = gray[: len(gray) // 2]  # truncated
    files["00000012_000.png"] = b""  # zero bytes
    files["00000013_000.png"] = b"this is not a png\n"  # text file named .png
    expected = {name: "" for name in list(files)[:4]}
    expected.update({"00000011_000.png": "truncated_or_corrupt", "00000012_000.png": "zero_bytes",
                     "00000013_000.png": "unsupported_format", "00000014_000.png": "missing"})
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(data)
    return expected
