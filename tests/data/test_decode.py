import numpy as np
import pytest

from thorax_ray.data.decode import DecodeError, decode_png
from tests.data.pngs import gray_image, png_bytes, variants


def test_every_variant_decodes_like_its_gray_twin():
    gray = gray_image(128)
    decoded = {name: decode_png(data, 64) for name, data in variants(gray).items()}
    for name, array in decoded.items():
        assert array.dtype == np.uint8 and array.shape == (64, 64)
        assert np.abs(array.astype(int) - decoded["gray"].astype(int)).max() <= 1, name


def test_same_size_is_lossless():
    gray = gray_image(64)
    assert np.array_equal(decode_png(png_bytes(gray), 64), gray)


def test_downscale_is_close_to_area_mean():
    gray = gray_image(128)
    expected = gray.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    assert np.abs(decode_png(png_bytes(gray), 64).astype(float) - expected).mean() < 2.0


@pytest.mark.parametrize("data, reason", [
    (b"", "zero_bytes"),
    (b"hello, not a png", "not_png"),
    (png_bytes(gray_image(64))[:300], "truncated_or_corrupt"),
    (png_bytes(gray_image(16)), "wrong_size"),
])
def test_bad_inputs_have_distinct_reasons(data, reason):
    with pytest.raises(DecodeError) as error:
        decode_png(data, 32)
    assert error.value.reason == reason


def test_expected_source_size():
    with pytest.raises(DecodeError, match="wrong_size: 64x64"):
        decode_png(png_bytes(gray_image(64)), 32, expected_source_size=1024)
