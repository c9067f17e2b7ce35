"""Training sources: with `limit` on prepared shards, the rows read are exactly the rows the class weights
are counted from (the shards' own row order differs from the manifest's)."""
import numpy as np
import pyarrow as pa
import pytest

from tests.data.prepared import prepare_here

from thorax_ray.data.sources import DataConfig, RowsNamed, open_source
from thorax_ray.data.splits import SplitConfig
from thorax_ray.labels import FINDING_COLUMNS


def test_rows_named_keeps_only_those_rows():
    table = pa.table({"image_index": ["a.png", "b.png", "c.png"], "x": [1, 2, 3]})
    assert RowsNamed(["c.png", "a.png", "z.png"])(table).column("x").to_pylist() == [1, 3]


def test_a_random_split_asked_of_an_official_prepared_output_is_refused(synthetic_small, tmp_path):
    prepare_here(str(synthetic_small), str(tmp_path / "prepared"))
    with pytest.raises(ValueError, match="prepared on NIH's official split, but the config asks for a random"):
        open_source(DataConfig(data=str(tmp_path / "prepared"), split=SplitConfig(kind="random")))
    source = open_source(DataConfig(data=str(tmp_path / "prepared")))
    assert source.input.split["kind"] == "official"


def test_limited_prepared_rows_are_the_rows_counted(ray_local, learnable_images):
    source = open_source(DataConfig(data=str(learnable_images / "prepared"), limit=40))
    counted, rows = source.label_counts("train")
    read = source.dataset("train", images=True).select_columns(["image_index", *FINDING_COLUMNS]).to_pandas()
    assert rows == 40 and len(read) == 40
    assert set(read["image_index"]) == set(source.rows("train")["image_index"])
    assert np.array_equal(read[list(FINDING_COLUMNS)].to_numpy().sum(axis=0), counted)
