"""The one input resolver (thorax_ray.data.inputs) as training and evaluation use it: each kind once, a
prepared output's commit record read once per job and its shards read from the version it resolved."""
import json
import os

import pytest

from tests.data.prepared import count_commit_reads, fake_ray_reads, prepare_here
from thorax_ray.data.inputs import InputSource, resolve_dataset, resolve_input
from thorax_ray.data.origin import data_origin
from thorax_ray.data.sources import DataConfig, open_source


@pytest.fixture(scope="module")
def prepared(synthetic_small, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("prepared") / "out")
    return out, prepare_here(str(synthetic_small), out)


def test_training_source_reads_the_commit_record_once(prepared, monkeypatch):
    out, record = prepared
    reads = count_commit_reads(monkeypatch)
    shard_reads = fake_ray_reads(monkeypatch)
    source = open_source(DataConfig(data=out, size=32))
    source.label_counts("train")
    for split in ("train", "val"):
        source.dataset(split, images=True)
    assert source.data_origin == "synthetic"  # recorded when resolving: nothing read again
    assert reads == [out]  # one read for the whole job: resolving, shards, origin
    assert source.kind == "prepared" and source.prepared == record and source.stored_size == 32
    assert len(shard_reads) == 2 and all(f"versions/{record['version']}/" in p for p in shard_reads[0])


def test_a_prepare_overwrite_after_resolving_does_not_mix_versions(prepared, monkeypatch, tmp_path):
    out, record = prepared
    source = open_source(DataConfig(data=out, size=32))
    shard_reads = fake_ray_reads(monkeypatch)
    newer = {**record, "version": "20990101T000000Z-ffffff",
             "files": [{**f, "path": f["path"].replace(record["version"], "20990101T000000Z-ffffff")}
                       for f in record["files"]]}
    committed = os.path.join(out, "prepared.json")
    original = open(committed).read()
    try:
        with open(committed, "w") as handle:  # a concurrent `prepare --overwrite` swaps a new version in
            json.dump(newer, handle)
        source.dataset("train", images=True)
    finally:
        with open(committed, "w") as handle:
            handle.write(original)
    assert shard_reads and all(f"versions/{record['version']}/" in p for p in shard_reads[0])


def test_raw_dataset_source_has_manifest_rows_origin_and_boxes(synthetic_small, monkeypatch):
    reads = count_commit_reads(monkeypatch)
    source = resolve_dataset(str(synthetic_small))
    assert isinstance(source, InputSource) and source.kind == "dataset" and source.prepared is None
    assert reads == [str(synthetic_small)]
    assert source.data_origin == "synthetic" == data_origin(str(synthetic_small))
    assert source.bbox_csv.endswith("BBox_List_2017.csv") and source.dataset_root == str(synthetic_small)
    assert len(source.rows) == 120 and "metadata_source" not in source.rows.columns  # the manifest's rows


def test_prepared_source_for_scoring_and_for_training_agree(prepared, synthetic_small, monkeypatch):
    out, record = prepared
    reads = count_commit_reads(monkeypatch)
    scoring, training = resolve_input(out), resolve_dataset(out)
    assert reads == [out, out]  # once each
    assert scoring.kind == training.kind == "prepared" and scoring.prepared == training.prepared == record
    assert list(scoring.rows["image_index"]) == list(training.rows["image_index"])
    assert scoring.split_hash == training.split_hash == record["split_hash"]
    assert scoring.dataset_root == str(synthetic_small) and scoring.data_origin == "synthetic"
    assert scoring.bbox_csv == training.bbox_csv and scoring.bbox_csv.endswith("BBox_List_2017.csv")
    with pytest.raises(AttributeError):
        scoring.kind = "dataset"  # frozen: what was resolved stays as it was
