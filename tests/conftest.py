"""Shared fixtures: a real S3-protocol server on 127.0.0.1 (moto's standalone server), one local Ray,
and small synthetic datasets generated once per session."""
from __future__ import annotations

import os
import socket

import pytest

from thorax_ray.data.pipeline import ImageConfig
from thorax_ray.data.prepare import PrepareConfig, prepare
from thorax_ray.data.splits import SplitConfig
from thorax_ray.synthetic.dataset import SyntheticConfig, write_synthetic_dataset

# Fixtures whose tests need a running Ray: such a test is slow (the session's Ray starts once, in ~30 s on 2
# cores, and every Ray Data or Train call costs seconds), so it runs in `make test` only, not `make test-fast`.
RAY_FIXTURES = ("ray_local",)


def pytest_collection_modifyitems(config, items):
    """Marks `slow` every test that uses the session's Ray (directly or through another fixture); tests that
    start a job or a bench in a subprocess are marked in their modules."""
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in RAY_FIXTURES):
            item.add_marker(pytest.mark.slow)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """Starts moto's S3 server on 127.0.0.1 and points the standard AWS variables at it."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL")}
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint})
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh, empty bucket per test; returns its s3:// URI."""
    import boto3

    name = "thorax-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40].strip("-")
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one intra-op thread is much faster than contended OpenMP spinning on 2 cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory):
    """120 images of 64 px in the full NIH layout (session-wide, read-only for tests)."""
    out = tmp_path_factory.mktemp("synthetic_small")
    write_synthetic_dataset(SyntheticConfig(out=str(out), images=120, size=64, seed=3, workers=2), progress=False)
    return out




@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One local Ray for the whole session (start-up costs seconds on 2 cores). It starts after the S3
    server so that its workers inherit the AWS variables, as workers on a real cluster inherit theirs."""
    import ray

    from thorax_ray.ray_setup import init_ray

    # Started as every job starts its private Ray (token authentication, its own address for Ray's own
    # lookups, the dashboard: Ray Train's placement-group cleaner asks the State API whether the run's
    # controller lives, and without it every fit() waited ~15 s at its end for that answer to time out).
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    init_ray(num_cpus=4, runtime_env={"env_vars": {"PYTHONPATH": repo}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_job_env(ray_local) -> dict[str, str]:
    """Environment variables that make a job or bench started in a subprocess join the session's Ray, as a
    job run by `ray job submit` joins its cluster, instead of starting a private Ray of its own (that costs
    15-25 s per subprocess on 2 cores). Tests of what a private Ray does (its start, its console, Ctrl-C)
    leave it out."""
    return {"RAY_ADDRESS": ray_local.get_runtime_context().gcs_address, "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": os.environ["RAY_AUTH_TOKEN"]}


@pytest.fixture(scope="session")
def learnable_images(tmp_path_factory, ray_local):
    """900 images with clearly drawn findings (difficulty 0.5), prepared as 64 px shards."""
    root = tmp_path_factory.mktemp("learnable")
    write_synthetic_dataset(SyntheticConfig(out=str(root / "raw"), images=900, size=96, seed=21, difficulty=0.5),
                            progress=False)
    prepare(PrepareConfig(data=str(root / "raw"), out=str(root / "prepared"), image=ImageConfig(size=64),
                          split=SplitConfig(val_fraction=0.25)))
    return root


@pytest.fixture(scope="session")
def metadata_only(tmp_path_factory):
    """A metadata-only dataset (CSV and split lists, no PNG at all)."""
    root = tmp_path_factory.mktemp("metadata_only")
    write_synthetic_dataset(SyntheticConfig(out=str(root), images=12000, seed=8, metadata_only=True), progress=False)
    return root
