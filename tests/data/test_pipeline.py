import numpy as np
import pyarrow as pa
import pytest

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
    assert list(sized["ok"]) == [True, False, False] and list(sized["reason"]) == ["", "unsupported_format", "missing"]
    plain = ImageLoader(ImageConfig(size=8))(batch)
    assert "width" not in plain.columns and "height" not in plain.columns
    assert list(plain["image"]) == list(sized["image"]) and len(plain["image"][0]) == 64


def test_rows_without_a_csv_row_take_dicom_tags_and_metadata_models_skip_csv_rows(tmp_path):
    import pandas as pd

    from tests.data.dicoms import dicom_bytes
    from tests.data.pngs import gray_image, png_bytes

    (tmp_path / "a.dcm").write_bytes(dicom_bytes(gray_image(64), age="030Y", sex="M", view="PA"))
    (tmp_path / "b.dcm").write_bytes(dicom_bytes(gray_image(64), age="070Y", sex="F", view="AP"))
    (tmp_path / "c.png").write_bytes(png_bytes(gray_image(64)))
    batch = pd.DataFrame({"path": [str(tmp_path / n) for n in ("a.dcm", "b.dcm", "c.png")] + ["/gone/d.png"],
                          "metadata_source": ["none", "csv", "none", "csv"], "age_years": [None, 51.0, None, 40.0],
                          "sex": [None, "M", None, "F"], "original_width": pd.array([None, 2500, None, 2048], "Int64")})
    loaded = ImageLoader(ImageConfig(size=32))(batch)
    assert list(loaded["metadata_source"]) == ["dicom", "csv", "none", "csv"]  # a CSV row wins over the tags
    ages = loaded["age_years"]
    assert (ages[0], ages[1]) == (30.0, 51.0) and pd.isna(ages[2]) and ages[3] == 40.0
    assert list(loaded["sex"][:2]) == ["M", "M"] and list(loaded["original_width"][:2]) == [64, 2500]
    assert list(loaded["reason"]) == ["", "", "", "missing"] and "view_position" not in loaded.columns
    metadata_only = ImageLoader(ImageConfig(size=32), images=False)(batch)
    assert list(metadata_only["ok"]) == [True, True, True, True]  # CSV rows are not read (d.png is gone)
    assert list(metadata_only["metadata_source"]) == ["dicom", "csv", "none", "csv"]
    assert set(metadata_only["image"]) == {b""}


@pytest.mark.parametrize("settings, message", [
    ({"size": 0}, "image size must be between 1 and 4096 pixels, got 0"),  # was a ZeroDivisionError in prepare
    ({"size": -8}, "image size must be between 1 and 4096 pixels, got -8"),  # was a 73-line Ray traceback
    ({"read_attempts": 0}, "read_attempts must be >= 1"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
])
def test_bad_image_settings_fail_when_the_config_is_built(settings, message):
    with pytest.raises(ValueError, match=message):
        ImageConfig(**settings)


def test_the_manifest_dataset_is_built_on_the_driver_without_tasks(ray_local):
    """ray.data.from_pandas started a task per block to describe it (each asking for a plain CPU of any node
    type; Ray Data's start-up check then saw "no available CPUs"): the blocks are described on the driver."""
    import time

    import pandas as pd
    from ray.util.state import list_tasks

    from thorax_ray.data.pipeline import manifest_dataset

    def describing_tasks() -> int:
        return len(list_tasks(address=ray_local.get_runtime_context().gcs_address, raise_on_missing_output=False,
                              filters=[("name", "=", "get_table_block_metadata_schema")], limit=10000))

    before = describing_tasks()
    rows = pd.DataFrame({"image_index": [f"{i:08d}_000.png" for i in range(1000)], "age_years": range(1000)})
    dataset = manifest_dataset(rows, rows_per_block=100)
    time.sleep(3)  # task events reach the State API within about a second
    assert describing_tasks() == before
    assert dataset.num_blocks() == 10 and dataset.to_pandas()["age_years"].tolist() == list(range(1000))
