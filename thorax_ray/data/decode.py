"""Image bytes (PNG, JPEG or DICOM, told apart by their content, never by the file name) -> one-channel
uint8 image of a fixed size. One decoder for every stage: prepare, training from raw files, scoring,
overlays.

* PNG: every variant of the real data: 8-bit gray, RGB, RGBA, 16-bit (and palette/LA/1-bit); 16-bit is
  scaled by 1/257 with rounding, colour reduced by luma.
* JPEG (baseline/progressive, gray or colour) through Pillow, reduced the same way.
* DICOM Part 10 files (128-byte preamble, then `DICM`) through pydicom: see `thorax_ray.data.dicom`
  (modality LUT, VOI LUT/window or min-max normalisation, MONOCHROME1 inverted); the tags' patient
  information travels along (`Decoded.tags`). A bare data set without the preamble is not a DICOM
  file by the standard and is quarantined as `unsupported_format`.

Pixels stay uint8 from here until the training worker. Failures raise DecodeError with a stable reason
code from thorax_ray.data.quarantine.QUARANTINE_REASONS, which ends up in the quarantine tables.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from thorax_ray.data.dicom import decode_dicom, dicom_size, is_dicom
from thorax_ray.data.quarantine import DecodeError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
MIN_SIDE = 32
PNG_HEADER_BYTES = 24  # signature (8) + IHDR length/type (8) + width (4) + height (4)
HEADER_BYTES = 64 * 1024  # enough for the size of a JPEG, and the header of nearly every DICOM

@dataclass(frozen=True)
class Decoded:
    """One decoded image: `pixels` (size, size) uint8, the source's width and height before resizing,
    its format and, for DICOM, the metadata columns read from its tags (`dicom.metadata_from_tags`)."""

    pixels: np.ndarray
    width: int
    height: int
    format: str  # "png" | "jpeg" | "dicom"
    tags: dict | None = field(default=None)


def sniff(data: bytes) -> str:
    """"png", "jpeg" or "dicom" from the first bytes; DecodeError otherwise."""
    if len(data) == 0:
        raise DecodeError("zero_bytes")
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SIGNATURE):
        return "jpeg"
    if is_dicom(data):
        return "dicom"
    raise DecodeError("unsupported_format", f"starts with {data[:8]!r}")


def to_gray8(image: Image.Image) -> Image.Image:
    """Reduces any PNG/JPEG mode to 8-bit gray (16-bit scaled by 1/257 with rounding, colour by luma)."""
    if image.mode == "L":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(image, dtype=np.uint32)
        return Image.fromarray(((wide + 128) // 257).clip(0, 255).astype(np.uint8), mode="L")
    if image.mode == "LA":
        return image.getchannel("L")
    return image.convert("L")


def _open_pil(data: bytes, kind: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=["PNG" if kind == "png" else "JPEG"])
        image.load()
    except (UnidentifiedImageError, SyntaxError, OSError, ValueError) as error:
        raise DecodeError("truncated_or_corrupt", str(error)[:200]) from None
    return image


def decode_full(data: bytes) -> tuple[Image.Image, str, dict | None]:
    """Any accepted image at full resolution: (8-bit gray PIL image, format, DICOM tags or None)."""
    kind = sniff(data)
    if kind == "dicom":
        decoded = decode_dicom(data)
        gray = np.rint(decoded.pixels * 255.0).astype(np.uint8)
        return Image.fromarray(gray, mode="L"), kind, decoded.tags
    return to_gray8(_open_pil(data, kind)), kind, None


def decode_gray8(data: bytes) -> np.ndarray:
    """Any accepted image at full resolution as an (H, W) uint8 array (overlays)."""
    return np.asarray(decode_full(data)[0], dtype=np.uint8)


def decode_image(data: bytes, size: int, *, expected_source_size: int | None = None) -> Decoded:
    """Decodes PNG/JPEG/DICOM bytes to (size, size) uint8 pixels, resizing in uint8 (bilinear with
    box-filtered reduction)."""
    gray, kind, tags = decode_full(data)
    width, height = gray.size
    if min(width, height) < MIN_SIDE or (expected_source_size and (width, height) != (expected_source_size,) * 2):
        raise DecodeError("wrong_size", f"{width}x{height}")
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    array = np.asarray(gray, dtype=np.uint8)
    if array.shape != (size, size):
        raise DecodeError("wrong_size", f"decoded to {array.shape}")
    return Decoded(pixels=array, width=width, height=height, format=kind, tags=tags)


def image_size(head: bytes) -> tuple[int, int]:
    """(width, height) from the first bytes of an image (HEADER_BYTES are enough for PNG/JPEG and
    nearly every DICOM header); DecodeError when they do not say."""
    kind = sniff(head)
    if kind == "png":
        if len(head) < PNG_HEADER_BYTES:
            raise DecodeError("truncated_or_corrupt", "no PNG header")
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if kind == "dicom":
        return dicom_size(head)
    try:
        with Image.open(io.BytesIO(head), formats=["JPEG"]) as image:  # the size comes from the SOF marker
            return image.size
    except (UnidentifiedImageError, SyntaxError, OSError, ValueError) as error:
        raise DecodeError("truncated_or_corrupt", str(error)[:200]) from None
