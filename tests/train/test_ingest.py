"""How Ray Train hands the datasets to the workers (train.train.ingest_config): the validation rows are split
between the workers, each row on exactly one of them, and read once per epoch in total (issue 24 item 1: an
unsplit dataset is every worker's full iterator, so N workers read it N times an epoch). Counted at the read:
a map stage in front of the workers counts every row it passes."""
import threading

import numpy as np
import pytest
import ray

from thorax_ray.train.train import ingest_config


@ray.remote
class RowCounter:
    def __init__(self):
        self.rows = 0

    def add(self, n: int) -> None:
        self.rows += n

    def total(self) -> int:
        return self.rows


def counted(n: int, counter):
    def count(batch):
        ray.get(counter.add.remote(len(batch["image_index"])))  # counted before the rows move on
        return batch

    names = np.array([f"{i:08d}.png" for i in range(n)])
    return ray.data.from_items([{"image_index": name} for name in names], override_num_blocks=8).map_batches(count)


def consume(iterators) -> list[list[str]]:
    """Every worker's iterator read at the same time (as the workers of one epoch do)."""
    seen = [[] for _ in iterators]

    def read(i):
        for batch in iterators[i].iter_batches(batch_size=16, batch_format="numpy"):
            seen[i].extend(batch["image_index"].tolist())

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(iterators))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a worker's validation iterator never ended"
    return seen


@pytest.mark.parametrize("world", [2, 3])
def test_validation_rows_are_read_once_per_epoch_in_total_each_on_one_worker(ray_local, world):
    n, counter = 101, RowCounter.remote()
    datasets = {"train": ray.data.range(64), "val": counted(n, counter)}
    shards = ingest_config().configure(datasets, world_size=world, worker_handles=None, worker_node_ids=None)
    iterators = [shard["val"] for shard in shards]
    for epoch in range(2):
        before = ray.get(counter.total.remote())
        seen = consume(iterators)
        assert sorted(name for part in seen for name in part) == [f"{i:08d}.png" for i in range(n)], epoch
        assert ray.get(counter.total.remote()) - before == n  # read once in total, not once per worker
