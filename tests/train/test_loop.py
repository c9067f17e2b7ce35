import pyarrow as pa

from thorax_ray.train.loop import ValidationRows


class CountingIterator:
    def __init__(self, tables):
        self.tables, self.passes = tables, 0

    def iter_batches(self, batch_size, batch_format):
        self.passes += 1
        yield from self.tables


def test_validation_rows_cached_after_first_pass_when_small():
    tables = [pa.table({"x": list(range(i, i + 10))}) for i in range(0, 30, 10)]
    source = CountingIterator(tables)
    rows = ValidationRows(source, batch_size=10, cache_bytes=10_000)
    assert [t["x"][0].as_py() for t in rows] == [0, 10, 20]
    assert [t["x"][0].as_py() for t in rows] == [0, 10, 20]
    assert source.passes == 1


def test_validation_rows_stream_every_time_when_too_big():
    source = CountingIterator([pa.table({"x": list(range(100))})] * 3)
    rows = ValidationRows(source, batch_size=100, cache_bytes=1000)
    assert sum(len(t) for t in rows) == 300 and sum(len(t) for t in rows) == 300
    assert source.passes == 2
