"""DICOM bytes -> one grayscale radiograph in [0, 1] plus the patient information of its tags.

Pixel pipeline (the order of DICOM PS3.3 C.11, as torchxrayvision's `read_xray_dcm` and pydicom do it):

1. `Dataset.pixel_array` (pydicom >= 3): the stored values, decoded by whichever plugin handles the
   transfer syntax (uncompressed, RLE; JPEG baseline/extended through Pillow or pylibjpeg-libjpeg; JPEG
   lossless through pylibjpeg-libjpeg; JPEG 2000 through Pillow), `BitsStored` and
   `PixelRepresentation` respected (high bits masked, signed values sign-extended).
2. Modality LUT: `RescaleSlope`/`RescaleIntercept` (or a Modality LUT Sequence), `apply_modality_lut`.
3. VOI: the first VOI LUT (VOI LUT Sequence, preferred) or the first window (`WindowCenter`/
   `WindowWidth`, with `VOILUTFunction` LINEAR, LINEAR_EXACT or SIGMOID), `apply_voi_lut(index=0)`; the
   result is scaled from the VOI's own output range (the LUT's smallest..largest entry, or the window's
   output range) to [0, 1], so values outside the window clip to 0 or 1 as on a viewer.
   Without a VOI LUT or window: **min-max normalisation** over the image after step 2,
   (value - min) / (max - min) (a constant image gives 0). This is what the widely used Kaggle/VinBigData
   `read_xray` does; torchxrayvision divides by the maximum only. It is invariant to any increasing
   affine change of the stored values, so the same picture stored at 8, 12 or 16 bits, or with another
   rescale slope/intercept, gives the same result.
4. MONOCHROME1 (white = low values) is inverted last, x -> 1 - x, so every output is MONOCHROME2
   (white = dense, as the NIH PNGs). `PresentationLUTShape` is not applied (in DX objects INVERSE goes
   with MONOCHROME1 and describes the same inversion).

Accepted objects: one frame, one sample per pixel, MONOCHROME1/MONOCHROME2, and a projection-radiograph
modality (CR, DX, DR, RG, OT or no Modality). Everything else raises DecodeError with a reason from
`thorax_ray.data.quarantine.QUARANTINE_REASONS`: `not_a_radiograph` (RGB/YBR/palette colour, other modalities
such as CT or MR), `multi_frame`, `no_pixel_data` (structured reports, key-object notes, DICOMDIR...),
`unsupported_transfer_syntax` (no installed decoder), `truncated_or_corrupt`.
"""
from __future__ import annotations

import io
import math
import re
import struct
import warnings
from dataclasses import dataclass

import numpy as np

from thorax_ray.data.nih_csv import AGE_UNIT_YEARS, MAX_AGE_YEARS
from thorax_ray.data.quarantine import DecodeError

DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"
RADIOGRAPH_MODALITIES = ("CR", "DX", "DR", "RG", "OT")
_DICOM_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$")


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: 128-byte preamble followed by `DICM`."""
    return data[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + 4] == DICOM_MAGIC


@dataclass(frozen=True)
class DicomImage:
    pixels: np.ndarray  # (rows, columns) float64 in [0, 1], MONOCHROME2
    tags: dict  # metadata columns from the tags (see `metadata_from_tags`)
    normalisation: str  # "voi_lut" | "window" | "min_max"


def parse_dicom_age(text) -> float | None:
    """DICOM Age String (AS, `nnnD/W/M/Y`: `062Y`, `011M`, `007D`) -> years; None when absent, malformed
    or over 120 years."""
    if text is None:
        return None
    match = _DICOM_AGE.match(str(text))
    if not match:
        return None
    years = int(match.group(1)) * AGE_UNIT_YEARS[match.group(2)]
    return years if years <= MAX_AGE_YEARS else None


def _spacing(ds) -> tuple[float | None, float | None]:
    """(x, y) in mm: `ImagerPixelSpacing` (at the detector, what NIH's OriginalImagePixelSpacing is), else
    `PixelSpacing`; both list the row spacing (y) first."""
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        value = ds.get(keyword)
        try:
            y, x = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0:
            return x, y
    return None, None


def metadata_from_tags(ds) -> dict:
    """The manifest's metadata columns from DICOM tags (None where a tag is absent or unusable):
    age_years (PatientAge), sex (PatientSex M/F), view_position (ViewPosition PA/AP, other values
    "other"), original_width/original_height (Columns/Rows), pixel_spacing_x/_y."""
    sex = str(ds.get("PatientSex") or "").strip().upper()
    view = str(ds.get("ViewPosition") or "").strip().upper()
    x, y = _spacing(ds)
    columns, rows = ds.get("Columns"), ds.get("Rows")
    return {
        "age_years": parse_dicom_age(ds.get("PatientAge")),
        "sex": sex if sex in ("M", "F") else None,
        "view_position": view if view in ("PA", "AP") else ("other" if view else None),
        "original_width": int(columns) if columns else None,
        "original_height": int(rows) if rows else None,
        "pixel_spacing_x": x,
        "pixel_spacing_y": y,
    }


def read_dataset(data: bytes, *, pixels: bool = True):
    """Parses DICOM bytes with pydicom (the pixel data element too unless `pixels` is False)."""
    import pydicom  # deferred: pydicom (DICOM input only)
    from pydicom.errors import InvalidDicomError  # deferred: pydicom (DICOM input only)

    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=not pixels)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, struct.error) as error:
        raise DecodeError("truncated_or_corrupt", f"DICOM: {error}"[:200]) from None


def check_radiograph(ds) -> None:
    """Raises DecodeError unless `ds` holds one grayscale projection radiograph."""
    modality = str(ds.get("Modality") or "").strip().upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        raise DecodeError("not_a_radiograph", f"Modality {modality}")
    if "PixelData" not in ds:
        raise DecodeError("no_pixel_data", f"SOP class {ds.get('SOPClassUID', 'unknown')}")
    photometric = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    samples = int(ds.get("SamplesPerPixel") or 1)
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or samples != 1:
        raise DecodeError("not_a_radiograph", f"PhotometricInterpretation {photometric or 'missing'}, "
                                              f"{samples} samples per pixel")
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames != 1:
        raise DecodeError("multi_frame", f"{frames} frames")


def stored_pixels(ds) -> np.ndarray:
    """`ds.pixel_array` with decoder problems mapped to quarantine reasons."""
    from pydicom.pixels import get_decoder  # deferred: pydicom (DICOM input only)

    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None:
        try:
            available = get_decoder(syntax).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise DecodeError("unsupported_transfer_syntax", f"{syntax} ({syntax.name}): no installed decoder")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Bits Stored value (12) is less than the sample bit depth"
            array = ds.pixel_array
    except (ValueError, RuntimeError, OSError, EOFError, AttributeError, KeyError, TypeError) as error:
        raise DecodeError("truncated_or_corrupt", f"DICOM pixel data: {error}"[:200]) from None
    if array.ndim != 2:
        raise DecodeError("not_a_radiograph", f"pixel array of shape {array.shape}")
    return array


def _voi_lut(ds, values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The first VOI LUT applied, and its smallest and largest entry (vendors often declare 16 bits
    and use 12)."""
    from pydicom.pixels import apply_voi  # deferred: pydicom (DICOM input only)

    descriptor = ds.VOILUTSequence[0].LUTDescriptor
    first, entries = int(descriptor[1]), int(descriptor[0]) or 2**16
    domain = apply_voi(np.arange(first, first + entries, dtype=np.int64), ds, index=0)
    shown = apply_voi(np.rint(values).astype(np.int64), ds, index=0)
    return shown, float(domain.min()), float(domain.max())


def to_unit_range(ds, stored: np.ndarray) -> tuple[np.ndarray, str]:
    """Modality LUT, VOI (LUT or window) or min-max, MONOCHROME1 inversion: values in [0, 1]."""
    from pydicom.pixels import apply_modality_lut, apply_windowing  # deferred: pydicom (DICOM input only)

    try:
        values = apply_modality_lut(stored, ds)
        if ds.get("VOILUTSequence") and "LUTData" in ds.VOILUTSequence[0]:
            shown, low, high = _voi_lut(ds, values)
            method = "voi_lut"
        elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
            shown = apply_windowing(values, ds, index=0)
            # The window's output range: what -inf and +inf map to (clipped ends of LINEAR, SIGMOID asymptotes).
            low, high = (float(v) for v in apply_windowing(np.array([-np.inf, np.inf]), ds, index=0))
            method = "window"
        else:
            shown, low, high, method = values, float(np.min(values)), float(np.max(values)), "min_max"
    except (ValueError, NotImplementedError, AttributeError, TypeError, IndexError) as error:
        raise DecodeError("truncated_or_corrupt", f"DICOM LUT/window: {error}"[:200]) from None
    shown = np.asarray(shown, dtype=np.float64)
    unit = np.zeros_like(shown) if high <= low else np.clip((shown - low) / (high - low), 0.0, 1.0)
    if str(ds.PhotometricInterpretation).strip().upper() == "MONOCHROME1":
        unit = 1.0 - unit
    return unit, method


def decode_dicom(data: bytes) -> DicomImage:
    """DICOM bytes -> `DicomImage` (pixels in [0, 1], MONOCHROME2) or DecodeError with its reason."""
    ds = read_dataset(data)
    check_radiograph(ds)
    pixels, method = to_unit_range(ds, stored_pixels(ds))
    return DicomImage(pixels=pixels, tags=metadata_from_tags(ds), normalisation=method)


def dicom_size(data: bytes) -> tuple[int, int]:
    """(width, height) = (Columns, Rows) from the header (pixel data not needed)."""
    ds = read_dataset(data, pixels=False)
    if not ds.get("Columns") or not ds.get("Rows"):
        raise DecodeError("no_pixel_data", "no Rows/Columns")
    return int(ds.Columns), int(ds.Rows)
