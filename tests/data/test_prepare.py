import os

import numpy as np
import pandas as pd
import pytest

from tests.data.fakes import FlakyFileSystem
from tests.data.pngs import gray_image, variants, write_bad_and_good
from tests.helpers import upload_tree, write_text
from thorax_ray.data.decode import decode_image
from thorax_ray.data.nih_csv import DATA_ENTRY_HEADER
from thorax_ray.data.pipeline import ImageConfig, images_to_array
from thorax_ray.data.prepare import PrepareConfig, prepare
from thorax_ray.data.shards import PreparedError, prepared_files, read_commit, read_prepared
from thorax_ray.labels import FINDING_COLUMNS


def with_metadata(folder, names, labels="Effusion"):
    rows = [f"{n},{labels},0,{int(n[:8])},40,M,PA,2500,2048,0.143,0.143" for n in names]
    write_text(os.path.join(folder, "Data_Entry_2017.csv"), "\n".join([DATA_ENTRY_HEADER, *rows]) + "\n")


@pytest.fixture
def messy_dataset(tmp_path):
    expected = write_bad_and_good(tmp_path / "messy")
    with_metadata(tmp_path / "messy", expected)
    return tmp_path / "messy", expected


def read_all(out, split=None):
    return read_prepared(str(out), split).to_pandas()


def test_good_variants_written_bad_ones_quarantined(ray_local, messy_dataset, tmp_path):
    data, expected = messy_dataset
    summary = prepare(PrepareConfig(data=str(data), out=str(tmp_path / "out"), image=ImageConfig(size=48)))
    shards = read_all(tmp_path / "out")
    record = read_commit(str(tmp_path / "out"))
    quarantine = pd.read_parquet(tmp_path / "out" / "versions" / record["version"] / "quarantine.parquet")
    good = sorted(n for n, r in expected.items() if not r)
    assert sorted(shards["image_index"]) == good
    assert dict(zip(quarantine["image_index"], quarantine["reason"])) == {n: r for n, r in expected.items() if r}
    assert quarantine.set_index("image_index").loc["00000014_000.png", "stage"] == "locate"
    assert len(shards) + len(quarantine) == len(expected)
    assert sum(summary.written.values()) == 4 and sum(summary.quarantined.values()) == 4
    images = images_to_array(shards.sort_values("image_index")["image"].tolist(), 48)
    twin = decode_image(variants(gray_image(96))["gray"], 48).pixels
    assert all(np.abs(img.astype(int) - twin.astype(int)).max() <= 1 for img in images)
    assert (shards["effusion"] == 1).all()


def test_rerun_refuses_or_replaces_atomically(ray_local, messy_dataset, tmp_path):
    """--overwrite writes everything of the new version under its own folder and swaps it in with the commit
    record alone: a reader holding the old record still reads the old version whole; the replaced version
    is kept for the retention period, then deleted, and a folder of a prepare that never committed goes."""
    data, _ = messy_dataset
    out = tmp_path / "out"
    config = PrepareConfig(data=str(data), out=str(out), image=ImageConfig(size=32))
    first = prepare(config)
    old_record = read_commit(str(out))
    with pytest.raises(PreparedError, match="already holds a prepared dataset.*--overwrite"):
        prepare(config)
    top_level = sorted(os.listdir(out))
    orphan = out / "versions" / "20200101T000000Z-dead00" / "shards" / "split=train"  # a killed prepare's
    orphan.mkdir(parents=True)
    second = prepare(PrepareConfig(**{**config.__dict__, "overwrite": True, "image": ImageConfig(size=24)}))
    assert second.version != first.version and sorted(os.listdir(out)) == top_level  # nothing rewritten in place
    assert sorted(os.listdir(out / "versions")) == sorted([first.version, second.version])
    assert second.removed_versions == ["20200101T000000Z-dead00"]
    old_files = [str(out / f["path"]) for f in old_record["files"]]  # relative: the output can be moved whole
    assert all(os.path.exists(p) for p in old_files)  # a job that started on the old version finishes on it
    assert {len(v) for v in read_prepared(str(out)).to_pandas()["image"]} == {24 * 24}
    from thorax_ray.data.shards import read_prepared_tables
    assert len(read_prepared_tables(str(out), old_record)[0]) == 8  # the old manifest, still whole
    record = read_commit(str(out))
    assert [v["version"] for v in record["previous_versions"]] == [first.version]
    third = prepare(PrepareConfig(**{**config.__dict__, "overwrite": True, "keep_previous_hours": 0}))
    assert sorted(os.listdir(out / "versions")) == sorted([second.version, third.version])  # the latest replaced
    assert first.version in third.removed_versions and not any(os.path.exists(p) for p in old_files)
    assert len(read_all(out)) == 4


def test_reader_ignores_uncommitted_files(ray_local, messy_dataset, tmp_path):
    data, _ = messy_dataset
    prepare(PrepareConfig(data=str(data), out=str(tmp_path / "out"), image=ImageConfig(size=32)))
    stray = tmp_path / "out" / "versions" / "half-written" / "shards" / "split=train"
    stray.mkdir(parents=True)
    (stray / "part-x.parquet").write_bytes(b"PAR1garbage")
    assert len(read_all(tmp_path / "out")) == 4
    with pytest.raises(PreparedError, match="no prepared.json"):
        prepared_files(str(tmp_path / "nowhere"))


def test_read_failure_is_quarantined_as_read_error(ray_local, tmp_path):
    # Retries happen inside the S3 client (storage.S3_ATTEMPTS_PER_REQUEST, tests/test_storage.py); a
    # failure that comes out of the filesystem is quarantined at once, one call per image.
    folder = tmp_path / "flaky"
    os.makedirs(folder)
    names = []
    for i, data in enumerate(variants(gray_image(64)).values()):
        name = f"{i + 1:08d}_000.png"
        (folder / name).write_bytes(data)
        names.append(name)
    with_metadata(folder, names)
    markers = tmp_path / "markers"
    markers.mkdir()
    flaky = FlakyFileSystem(str(markers), failures=1)
    prepare(PrepareConfig(data=str(folder), out=str(tmp_path / "out2"), image=ImageConfig(size=32)), filesystem=flaky)
    assert len(os.listdir(markers)) == len(names)  # every image read once and failed
    quarantine = pd.read_parquet(tmp_path / "out2" / "versions" / read_commit(str(tmp_path / "out2"))["version"]
                                 / "quarantine.parquet")
    assert set(quarantine["reason"]) == {"read_error"} and len(quarantine) == len(names)


def test_round_trip_pixels_and_labels(ray_local, synthetic_small, tmp_path):
    prepare(PrepareConfig(data=str(synthetic_small), out=str(tmp_path / "out"), image=ImageConfig(size=64)))
    record = read_commit(str(tmp_path / "out"))
    shards = read_all(tmp_path / "out")
    manifest = pd.read_parquet(tmp_path / "out" / "versions" / read_commit(str(tmp_path / "out"))["version"]
                               / "manifest.parquet").set_index("image_index")
    assert len(shards) == len(manifest) == sum(record["written"].values())
    sample = shards.sample(10, random_state=0)
    for row in sample.itertuples():
        original = decode_image(open(manifest.loc[row.image_index, "path"], "rb").read(), 64).pixels
        assert np.array_equal(np.frombuffer(row.image, np.uint8).reshape(64, 64), original)
        assert row.split == manifest.loc[row.image_index, "split"]
        for column in FINDING_COLUMNS:
            assert getattr(row, column) == manifest.loc[row.image_index, column]
    train = read_prepared(str(tmp_path / "out"), ["train"]).to_pandas()
    assert set(train["split"]) == {"train"} and len(train) == record["written"]["train"]
    # a block per shard file (below the context's target_max_block_size): Ray Data split each into 32 and
    # scoring on 2 CPUs stalled (thorax_ray.data.shards.read_prepared)
    files = prepared_files(str(tmp_path / "out"))[1]
    assert read_prepared(str(tmp_path / "out")).materialize().num_blocks() == len(files)
    # Ray Data's V1 Parquet reader (thorax_ray.ray_setup): V2 opened each read with 32 footer-reader actors, a
    # worker process each asking for a plain CPU of any node type
    from ray.util.state import list_actors

    footer_readers = list_actors(address=ray_local.get_runtime_context().gcs_address, raise_on_missing_output=False,
                                 filters=[("class_name", "=", "FooterReader")], limit=1000)
    assert footer_readers == []


def test_s3_in_and_out(ray_local, synthetic_small, s3_bucket, tmp_path):
    upload_tree(synthetic_small, f"{s3_bucket}/nih")
    out = f"{s3_bucket}/prepared"
    summary = prepare(PrepareConfig(data=f"{s3_bucket}/nih", out=out, image=ImageConfig(size=32)))
    assert sum(summary.written.values()) == 120 and not summary.quarantined
    record, files = prepared_files(out)
    assert all(f.startswith(f"{s3_bucket}/prepared/versions/{record['version']}/shards/") for f in files)
    shards = read_prepared(out, ["val", "test"]).to_pandas()
    assert set(shards["split"]) <= {"val", "test"} and len(shards) == record["written"]["val"] + record["written"]["test"]
    assert images_to_array(shards["image"].tolist(), 32).shape == (len(shards), 32, 32)


def test_readme_chexnet_split_command_builds_a_random_70_10_20_split(tmp_path):
    """The README's command for CheXNet's split, parsed by jobs/prepare.py as a user runs it, and the manifest
    that split gives a dataset with NIH's lists (in-process: the Ray pass of prepare is tested above)."""
    import shlex

    from tests.data.test_manifest import write_listed_dataset
    from tests.jobs.test_help import REPO, job_module
    from thorax_ray.data.manifest import build_manifest
    from thorax_ray.data.splits import TRAINING_SPLITS, SplitConfig

    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    line = next(x for x in readme.splitlines() if x.startswith("python jobs/prepare.py") and "--split random" in x)
    job = job_module("prepare")
    config = job.build_config(job.parse_args(shlex.split(line)[2:]))
    assert config.split == SplitConfig(kind="random", val_fraction=0.1, test_fraction=0.2, seed=0,
                                       required=TRAINING_SPLITS)
    official_test = write_listed_dataset(tmp_path)
    frame, summary = build_manifest(str(tmp_path), config.split)
    assert set(frame.loc[frame["split"] == "test", "image_index"]) != official_test
    assert summary.split["kind"] == "random" and summary.split["test_fraction"] == 0.2
