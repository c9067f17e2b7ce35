import io

import numpy as np
import pytest
from PIL import Image

from tests.data.dicoms import dicom_bytes
from tests.data.pngs import gray_image, png_bytes, variants
from thorax_ray.data.decode import HEADER_BYTES, DecodeError, decode_gray8, decode_image, image_size, sniff
from thorax_ray.data.quarantine import QUARANTINE_REASONS


def jpeg_bytes(array: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def test_every_variant_decodes_like_its_gray_twin():
    gray = gray_image(128)
    decoded = {name: decode_image(data, 64) for name, data in variants(gray).items()}
    for name, result in decoded.items():
        assert result.pixels.dtype == np.uint8 and result.pixels.shape == (64, 64)
        assert (result.width, result.height, result.format, result.tags) == (128, 128, "png", None)
        assert np.abs(result.pixels.astype(int) - decoded["gray"].pixels.astype(int)).max() <= 1, name


def test_jpeg_gray_and_colour_decode_close_to_the_png():
    gray = gray_image(128)
    png = decode_image(png_bytes(gray), 64).pixels.astype(int)
    for array in (gray, np.repeat(gray[..., None], 3, axis=2)):
        decoded = decode_image(jpeg_bytes(array), 64)
        assert decoded.format == "jpeg" and (decoded.width, decoded.height) == (128, 128)
        assert np.abs(decoded.pixels.astype(int) - png).mean() < 2.0  # lossy, but the same picture


def test_format_comes_from_the_content_not_the_name():
    gray = gray_image(64)
    assert [sniff(d) for d in (png_bytes(gray), jpeg_bytes(gray), dicom_bytes(gray))] == ["png", "jpeg", "dicom"]


def test_same_size_is_lossless():
    gray = gray_image(64)
    assert np.array_equal(decode_image(png_bytes(gray), 64).pixels, gray)


def test_downscale_is_close_to_area_mean():
    gray = gray_image(128)
    expected = gray.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    assert np.abs(decode_image(png_bytes(gray), 64).pixels.astype(float) - expected).mean() < 2.0


@pytest.mark.parametrize("data, reason", [
    (b"", "zero_bytes"),
    (b"hello, not a png", "unsupported_format"),
    (b"%PDF-1.7 a report", "unsupported_format"),
    (png_bytes(gray_image(64))[:300], "truncated_or_corrupt"),
    (jpeg_bytes(gray_image(64))[:200], "truncated_or_corrupt"),
    (png_bytes(gray_image(16)), "wrong_size"),
])
def test_bad_inputs_have_distinct_reasons(data, reason):
    with pytest.raises(DecodeError) as error:
        decode_image(data, 32)
    assert error.value.reason == reason and reason in QUARANTINE_REASONS


def test_expected_source_size():
    with pytest.raises(DecodeError, match="wrong_size: 64x64"):
        decode_image(png_bytes(gray_image(64)), 32, expected_source_size=1024)


def test_size_from_the_first_bytes_of_every_format():
    wide = np.zeros((40, 70), np.uint8)
    for data in (png_bytes(wide), jpeg_bytes(wide), dicom_bytes(wide)):
        assert image_size(data[:HEADER_BYTES]) == (70, 40)


def test_full_resolution_gray_for_overlays():
    gray = gray_image(80)
    assert np.array_equal(decode_gray8(png_bytes(gray)), gray)
    assert decode_gray8(dicom_bytes(gray)).shape == (80, 80)
