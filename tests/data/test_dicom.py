"""DICOM decoding: one picture stored three ways decodes to (nearly) the same pixels; VOI LUT, window,
rescale; tags as metadata; what is not one grayscale radiograph gets its quarantine reason."""
import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import HTJ2KLossless

from tests.data.dicoms import dicom_bytes, three_forms
from tests.data.pngs import gray_image
from thorax_ray.data.decode import DecodeError, decode_image
from thorax_ray.data.dicom import decode_dicom, parse_dicom_age
from thorax_ray.data.quarantine import QUARANTINE_REASONS

TOLERANCE = 1  # grey levels of 255, after decoding and resizing


def with_syntax(data: bytes, syntax) -> bytes:
    """The same file declared in another (compressed) transfer syntax."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_three_forms_of_one_picture_decode_alike():
    picture = gray_image(96)
    decoded = {name: decode_image(data, 48).pixels.astype(int) for name, data in three_forms(picture).items()}
    reference = decoded["mono2_8bit"]
    for name, pixels in decoded.items():
        assert np.abs(pixels - reference).max() <= TOLERANCE, name
    # min-max normalisation (no window in these files): the picture's darkest pixel is 0, the brightest 255
    full = decode_dicom(three_forms(picture)["mono1_8bit"]).pixels
    stretched = (picture - picture.min()) / (picture.max() - picture.min())
    assert np.abs(full - stretched).max() < 1e-9


def test_jpeg_compressed_dicom_decodes_close_to_the_uncompressed_one():
    picture = gray_image(96)
    jpeg = decode_image(dicom_bytes(picture, jpeg_quality=95), 48)
    assert jpeg.format == "dicom" and (jpeg.width, jpeg.height) == (96, 96)
    assert np.abs(jpeg.pixels.astype(int) - decode_image(dicom_bytes(picture), 48).pixels.astype(int)).mean() < 3


def test_window_and_rescale_are_applied():
    stored = np.array([[0, 1000], [2000, 4000]], np.uint16).repeat(16, 0).repeat(16, 1)
    # value = 2 * stored - 1000; window [1000, 3000] (centre 2000, width 2000): below -> 0, above -> 1
    image = decode_dicom(dicom_bytes(stored, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1000,
                                     WindowCenter=2000, WindowWidth=2000))
    assert image.normalisation == "window"
    assert image.pixels[0, 0] == 0.0 and image.pixels[-1, -1] == 1.0
    assert image.pixels[0, -1] == pytest.approx(0.0, abs=1e-3)  # 2*1000-1000 = 1000: the window's lower edge
    assert image.pixels[-1, 0] == pytest.approx(1.0, abs=1e-3)  # 3000: its upper edge
    inverted = decode_dicom(dicom_bytes(stored, bits_stored=12, photometric="MONOCHROME1", RescaleSlope=2,
                                        RescaleIntercept=-1000, WindowCenter=2000, WindowWidth=2000))
    assert np.allclose(inverted.pixels, 1.0 - image.pixels)


def test_voi_lut_is_preferred_and_scaled_by_its_own_range():
    stored = np.arange(256, dtype=np.uint8).reshape(16, 16)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 16]
    item.LUTData = np.array([min(4095, 2 * v * 16) for v in range(256)], "<u2").tobytes()  # 16 bits declared, 12 used
    data = dicom_bytes(stored, VOILUTSequence=[item], WindowCenter=10, WindowWidth=5)
    image = decode_dicom(data)
    assert image.normalisation == "voi_lut"
    assert image.pixels.max() == 1.0 and image.pixels[0, 0] == 0.0
    assert image.pixels.flat[64] == pytest.approx(2 * 64 * 16 / 4095)


def test_tags_become_metadata():
    image = decode_dicom(dicom_bytes(gray_image(64), age="011M", sex="M", view="PA", spacing=(0.143, 0.139)))
    assert image.tags == {"age_years": pytest.approx(11 / 12), "sex": "M", "view_position": "PA",
                          "original_width": 64, "original_height": 64, "pixel_spacing_x": 0.143,
                          "pixel_spacing_y": 0.139}
    bare = decode_dicom(dicom_bytes(gray_image(64), age=None, sex="O", view="LL", spacing=None)).tags
    assert (bare["age_years"], bare["sex"], bare["pixel_spacing_x"]) == (None, None, None)
    assert bare["view_position"] == "other"


@pytest.mark.parametrize("text, years", [("062Y", 62.0), ("011M", 11 / 12), ("007D", 7 / 365.25), ("004W", 28 / 365.25),
                                         ("", None), ("62", None), ("150Y", None), (None, None)])
def test_dicom_age_strings(text, years):
    assert parse_dicom_age(text) == (None if years is None else pytest.approx(years))


@pytest.mark.parametrize("make, reason", [
    (lambda p: dicom_bytes(np.repeat(p[..., None], 3, axis=2), photometric="RGB"), "not_a_radiograph"),
    (lambda p: dicom_bytes(np.repeat(p[..., None], 3, axis=2), photometric="YBR_FULL"), "not_a_radiograph"),
    (lambda p: dicom_bytes(p, modality="CT"), "not_a_radiograph"),
    (lambda p: dicom_bytes(p, frames=3), "multi_frame"),
    (lambda p: dicom_bytes(p, pixel_data=False), "no_pixel_data"),
    (lambda p: dicom_bytes(p)[:-500], "truncated_or_corrupt"),
    (lambda p: with_syntax(dicom_bytes(p, jpeg_quality=90), HTJ2KLossless), "unsupported_transfer_syntax"),
])
def test_what_is_not_one_grayscale_radiograph_is_quarantined(make, reason):
    with pytest.raises(DecodeError) as error:
        decode_image(make(gray_image(64)), 32)
    assert error.value.reason == reason and reason in QUARANTINE_REASONS
