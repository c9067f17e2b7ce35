"""Training rows are shuffled every epoch, reproducibly: the rows of the CSV (sorted by patient and
follow-up) never reach a batch in that order, the order differs between epochs, and the same seed gives
the same order. The training loop's own pieces are used: DataSource.dataset, shuffled_every_epoch and
epoch_batches, as trainer.fit and the per-worker loop call them."""
import pyarrow as pa

from thorax_ray.data.shards import read_prepared
from thorax_ray.data.sources import open_source
from thorax_ray.train.config import TrainConfig
from thorax_ray.train.feeds import epoch_batches
from thorax_ray.train.train import shuffled_every_epoch

BATCH = 32


def training_dataset(data, seed):
    config = TrainConfig.from_dict({"data": {"data": str(data), "batch_size": BATCH}, "run": {"seed": seed}})
    source = open_source(config.data)
    return config, shuffled_every_epoch(source.dataset("train", images=False, shuffle_seed=seed), seed)


def epoch_order(dataset, config, epoch) -> list[str]:
    batches = epoch_batches(dataset.iterator(), config, epoch=epoch, rank=0)
    return [name for table in batches for name in table.column("image_index").to_pylist()]


def first_batch(dataset, config, epoch) -> pa.Table:
    return next(iter(epoch_batches(dataset.iterator(), config, epoch=epoch, rank=0)))


def test_batches_mix_many_patients_and_differ_every_epoch(ray_local, metadata_only):
    config, dataset = training_dataset(metadata_only, seed=0)
    batch = first_batch(dataset, config, epoch=0)
    assert len(set(batch.column("patient_id").to_pylist())) >= BATCH * 3 // 4  # CSV order: 1-3 patients
    first, second = epoch_order(dataset, config, 0), epoch_order(dataset, config, 1)
    assert first[:BATCH] != second[:BATCH] and sorted(first) != first
    assert len(first) == len(set(first))  # still each row at most once per epoch


def test_the_same_seed_gives_the_same_order_and_another_seed_another(ray_local, metadata_only):
    config, dataset = training_dataset(metadata_only, seed=7)
    again_config, again = training_dataset(metadata_only, seed=7)
    other_config, other = training_dataset(metadata_only, seed=8)
    order = epoch_order(dataset, config, 0)
    assert epoch_order(again, again_config, 0) == order
    assert epoch_order(other, other_config, 0)[:BATCH] != order[:BATCH]


def test_prepared_shards_are_stored_in_a_random_row_order(ray_local, learnable_images):
    rows = read_prepared(str(learnable_images / "prepared"), ["train"], columns=["patient_id"]).take(BATCH)
    assert len({row["patient_id"] for row in rows}) >= BATCH * 3 // 4


def test_the_shuffle_switch_keeps_the_rows_order_for_ablations():
    """`data.shuffle: false` (bench/shuffle_ablation.py's CSV-order arm): the metadata feed hands out rows in
    their order every epoch; on (the default) every epoch has its own permutation."""
    import numpy as np
    import torch

    from thorax_ray.train.feeds import EncodedRows, TensorFeed

    n = 96
    rows = {split: EncodedRows([f"{i}.png" for i in range(n)], np.arange(n, dtype=np.float32)[:, None],
                               np.zeros((n, 14), np.float32)) for split in ("train", "val")}

    def epoch_rows(shuffle: bool, epoch: int) -> list[float]:
        config = TrainConfig.from_dict({"data": {"batch_size": 16, "shuffle": shuffle}, "model": {"name": "mlp"}})
        feed = TensorFeed(config, rows, device=torch.device("cpu"), rank=0, world=1)
        return [float(v) for batch in feed.train_batches(epoch) for v in batch.features[:, 0]]

    assert epoch_rows(False, 1) == epoch_rows(False, 2) == [float(i) for i in range(n)]
    shuffled = epoch_rows(True, 1)
    assert sorted(shuffled) == [float(i) for i in range(n)] and shuffled != sorted(shuffled)
    assert shuffled != epoch_rows(True, 2)
