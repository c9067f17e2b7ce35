"""Why an image was not used: the fixed vocabulary of quarantine reasons every stage writes, and the
error that carries one out of the decoders (`thorax_ray.data.decode`, `thorax_ray.data.dicom`)."""
from __future__ import annotations

QUARANTINE_COLUMNS = ("image_index", "path", "stage", "reason")  # of every quarantine table
QUARANTINE_REASONS: dict[str, str] = {
    # stage locate / read (thorax_ray.data.read)
    "missing": "a metadata row names an image that is not there, or the file vanished before it was read",
    "read_error": "storage kept failing after the retries",
    # stage decode (this module and thorax_ray.data.dicom)
    "zero_bytes": "an empty file",
    "unsupported_format": "neither PNG, JPEG nor DICOM (e.g. a text or PDF file)",
    "truncated_or_corrupt": "a PNG/JPEG/DICOM that cannot be decoded completely",
    "wrong_size": "smaller than 32 px on a side, or not --expected-source-size",
    "not_a_radiograph": "DICOM that is not one grayscale projection radiograph (RGB/YBR/palette colour, "
                        "or a modality such as CT, MR, US)",
    "multi_frame": "DICOM with more than one frame",
    "no_pixel_data": "DICOM without an image (structured report, key-object note, DICOMDIR...)",
    "unsupported_transfer_syntax": "DICOM compressed with a codec none of the installed decoders reads",
    # older runs only
    "not_png": "(runs before DICOM/JPEG support) content not PNG; now reported as unsupported_format",
}
"""The fixed vocabulary of quarantine reasons (reason -> meaning)."""


class DecodeError(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
