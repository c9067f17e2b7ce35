import numpy as np
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
