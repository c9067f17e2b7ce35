"""storage.filesystem's S3 client: botocore is the one retry layer, bounded by S3_ATTEMPTS_PER_REQUEST."""
from __future__ import annotations

import pickle

from thorax_ray import storage


def test_s3_filesystem_carries_the_retry_configuration(s3_bucket):
    fs, path = storage.filesystem(f"{s3_bucket}/images/a.png")
    assert path == f"{s3_bucket.removeprefix('s3://')}/images/a.png"
    fs.connect()
    config = fs.s3.meta.config
    assert config.retries == {"total_max_attempts": storage.S3_ATTEMPTS_PER_REQUEST, "mode": "standard"}
    assert fs.retries == 1  # s3fs's own loop: one pass, so it never multiplies botocore's tries


def test_retry_configuration_survives_pickling_to_workers(s3_server):
    fs, _ = storage.filesystem("s3://bucket/key", endpoint_url=s3_server)
    type(fs).clear_instance_cache()  # rebuilt from its storage options, as on a Ray worker
    copy = pickle.loads(pickle.dumps(fs))
    assert copy is not fs
    assert copy.retries == 1
    assert copy.config_kwargs["retries"]["total_max_attempts"] == storage.S3_ATTEMPTS_PER_REQUEST


def test_local_paths_are_unchanged(tmp_path):
    fs, path = storage.filesystem(str(tmp_path / "x"))
    assert path == str(tmp_path / "x") and "file" in fs.protocol


def test_image_reads_take_their_attempts_from_the_image_config(s3_server):
    from thorax_ray.data.pipeline import ImageConfig, ImageLoader

    loader = ImageLoader(ImageConfig(read_attempts=2, endpoint_url=s3_server))
    fs, _ = loader._fs_and_path("s3://bucket/images/a.png")
    assert fs.config_kwargs["retries"] == {"total_max_attempts": 2, "mode": "standard"}
