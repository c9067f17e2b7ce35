"""Builds DICOM files with pydicom for the tests: one picture stored the ways hospitals send it
(8-bit MONOCHROME2, inverted MONOCHROME1, 12-bit in 16 with junk in the unused high bits, JPEG
baseline compressed), and objects that are not one grayscale radiograph."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (JPEGBaseline8Bit, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian,
                         generate_uid)


def dicom_bytes(stored: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
                modality: str = "DX", age: str | None = "062Y", sex: str | None = "F", view: str | None = "AP",
                spacing: tuple[float, float] | None = (0.15, 0.14), frames: int = 1, pixel_data: bool = True,
                jpeg_quality: int | None = None, **tags) -> bytes:
    """A DICOM Part 10 file of `stored` ((rows, cols) gray, or (rows, cols, 3) RGB; uint8 or uint16);
    `jpeg_quality` compresses an 8-bit gray image as JPEG baseline; extra keyword tags are set as given
    (e.g. WindowCenter, RescaleSlope)."""
    stored = np.asarray(stored)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg_quality else ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    for keyword, value in (("PatientAge", age), ("PatientSex", sex), ("ViewPosition", view)):
        if value is not None:
            setattr(ds, keyword, value)
    if spacing is not None:
        ds.ImagerPixelSpacing = [spacing[1], spacing[0]]  # row spacing (y) first
    rgb = stored.ndim == 3
    ds.Rows, ds.Columns = stored.shape[:2]
    ds.SamplesPerPixel = 3 if rgb else 1
    if rgb:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if stored.dtype == np.uint8 else 16
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    if pixel_data:
        if jpeg_quality:
            buffer = io.BytesIO()
            Image.fromarray(stored.astype(np.uint8), mode="L").save(buffer, format="JPEG", quality=jpeg_quality)
            ds.PixelData = encapsulate([buffer.getvalue()])
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
        else:
            ds.PixelData = np.repeat(stored[None], frames, axis=0).tobytes() if frames > 1 else stored.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def three_forms(picture: np.ndarray) -> dict[str, bytes]:
    """One 8-bit picture as 8-bit MONOCHROME2, inverted MONOCHROME1 and 12-bit MONOCHROME2 (values x16+5
    in 16-bit words whose 4 unused high bits are set: BitsStored must mask them)."""
    twelve = (picture.astype(np.uint16) * 16 + 5) | np.uint16(0xF000)
    return {
        "mono2_8bit": dicom_bytes(picture),
        "mono1_8bit": dicom_bytes(255 - picture, photometric="MONOCHROME1"),
        "mono2_12bit": dicom_bytes(twelve, bits_stored=12),
    }


def write_mixed_folder(folder, size: int = 96) -> dict[str, str]:
    """What a hospital sends, in one folder: PNG variants (8-bit gray, RGB, RGBA, 16-bit), JPEGs (gray,
    colour), three forms of one DICOM picture, a JPEG-compressed DICOM, an RGB and a multi-frame DICOM,
    a text file and a hidden file. Returns file name -> expected quarantine reason ("" = scored),
    hidden files excluded."""
    import os

    from tests.data.pngs import gray_image, variants

    picture = gray_image(size)
    files = {f"png_{name}.png": data for name, data in variants(picture).items()}
    for name, array in (("gray", picture), ("colour", np.repeat(picture[..., None], 3, axis=2))):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=95)
        files[f"export_{name}.jpg"] = buffer.getvalue()
    files.update({f"{name}.dcm": data for name, data in three_forms(picture).items()})
    files["compressed.dcm"] = dicom_bytes(picture, jpeg_quality=95, age="045Y", sex="M", view="PA")
    files["colour_photo.dcm"] = dicom_bytes(np.repeat(picture[..., None], 3, axis=2), photometric="RGB")
    files["cine.dcm"] = dicom_bytes(picture, frames=2)
    files["README.txt"] = b"images from ward 3\n"
    expected = {name: "" for name in files}
    expected.update({"colour_photo.dcm": "not_a_radiograph", "cine.dcm": "multi_frame",
                     "README.txt": "unsupported_format"})
    files[".DS_Store"] = b"\x00\x00\x00\x01Bud1"
    os.makedirs(folder, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(data)
    return expected
