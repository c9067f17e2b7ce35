import numpy as np
import pytest
import pyarrow as pa

from thorax_ray.data.pipeline import ImageConfig, ImageLoader, images_to_array


def test_images_to_array_from_arrow_slices_and_lists():
    images = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
    column = pa.array([img.tobytes() for img in images], type=pa.binary())
    assert np.array_equal(images_to_array(column, 4), images)
    assert np.array_equal(images_to_array(column.slice(2, 3), 4), images[2:])
    chunked = pa.chunked_array([column.slice(0, 2), column.slice(2, 3)])
    assert np.array_equal(images_to_array(chunked, 4), images)
    assert np.array_equal(images_to_array([img.tobytes() for img in images], 4), images)


def test_loader_marks_missing_path_without_reading():
    loader = ImageLoader(ImageConfig(size=8))
    assert loader.load_one(None) == (b"", "locate", "missing")
    assert loader.load_one(float("nan")) == (b"", "locate", "missing")
    assert loader.load_one("/nonexistent/x.png") == (b"", "read", "missing")


def test_loader_records_source_width_and_height_when_asked(tmp_path):
    import pandas as pd

    from tests.data.pngs import png_bytes

    wide = np.zeros((40, 70), np.uint8)  # height 40, width 70
    (tmp_path / "wide.png").write_bytes(png_bytes(wide))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    batch = pd.DataFrame({"path": [str(tmp_path / "wide.png"), str(tmp_path / "bad.png"), None]})
    sized = ImageLoader(ImageConfig(size=8), sizes=True)(batch)
    assert list(sized["width"]) == [70, 0, 0] and list(sized["height"]) == [40, 0, 0]
    assert list(sized["ok"]) == [True, False, False] and list(sized["reason"]) == ["", "not_png", "missing"]
    plain = ImageLoader(ImageConfig(size=8))(batch)
    assert "width" not in plain.columns and "height" not in plain.columns
    assert list(plain["image"]) == list(sized["image"]) and len(plain["image"][0]) == 64


@pytest.mark.parametrize("settings, message", [
    ({"size": 0}, "image size must be between 1 and 4096 pixels, got 0"),  # was a ZeroDivisionError in prepare
    ({"size": -8}, "image size must be between 1 and 4096 pixels, got -8"),  # was a 73-line Ray traceback
    ({"read_attempts": 0}, "read_attempts must be >= 1"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
])
def test_bad_image_settings_fail_when_the_config_is_built(settings, message):
    with pytest.raises(ValueError, match=message):
        ImageConfig(**settings)
