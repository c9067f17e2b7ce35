"""PNG bytes -> one-channel uint8 image of a fixed size.

Accepts every PNG variant of the real data: 8-bit gray, RGB, RGBA, 16-bit (and palette/LA). Pixels
stay uint8 from here until the training worker. Failures raise DecodeError with a stable reason code
that ends up in the quarantine table."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_SIDE = 32


class DecodeError(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def to_gray8(image: Image.Image) -> Image.Image:
    """Reduces any PNG mode to 8-bit gray (16-bit scaled by 1/257 with rounding, colour by luma)."""
    if image.mode == "L":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(image, dtype=np.uint32)
        return Image.fromarray(((wide + 128) // 257).clip(0, 255).astype(np.uint8), mode="L")
    if image.mode == "LA":
        return image.getchannel("L")
    return image.convert("L")


def decode_png(data: bytes, size: int, *, expected_source_size: int | None = None) -> np.ndarray:
    """Decodes PNG bytes to a (size, size) uint8 array, resizing in uint8 (box-filtered reduction)."""
    if len(data) == 0:
        raise DecodeError("zero_bytes")
    if not data.startswith(PNG_SIGNATURE):
        raise DecodeError("not_png", f"starts with {data[:8]!r}")
    try:
        image = Image.open(io.BytesIO(data), formats=["PNG"])
        image.load()
    except (UnidentifiedImageError, SyntaxError, OSError, ValueError) as error:
        raise DecodeError("truncated_or_corrupt", str(error)[:200]) from None
    width, height = image.size
    if min(width, height) < MIN_SIDE or (expected_source_size and (width, height) != (expected_source_size,) * 2):
        raise DecodeError("wrong_size", f"{width}x{height}")
    gray = to_gray8(image)
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    array = np.asarray(gray, dtype=np.uint8)
    if array.shape != (size, size):
        raise DecodeError("wrong_size", f"decoded to {array.shape}")
    return array
