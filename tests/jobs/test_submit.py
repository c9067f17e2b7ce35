"""The runbook's path on a cluster that scales from zero: `ray job submit` with Ray's token authentication
to a head started with an autoscaler (Ray's fake multi-node provider, the one Ray's own autoscaler tests
use) whose only GPU node type has `min_workers: 0`. Training and scoring must ask for GPUs and the
autoscaler must start the GPU node; data, checkpoints and scores live on a real S3-protocol server (moto),
as a multi-node cluster needs.

The GPUs are Ray resources only: jobs schedule GPU workers and actors exactly as on a real cluster, and the
arithmetic stays on the CPU with gloo (tests/jobs/fake_gpus/sitecustomize.py, on the cluster's PYTHONPATH)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import psutil
import pytest
import yaml

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.dirname(sys.executable)
FAKE_GPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_gpus")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def node_ports() -> list[str]:
    """Free ports for the head's servers: the defaults (e.g. the dashboard agent's 52365) may be held by the
    test session's own Ray, and a head whose agent cannot bind answers job submissions with "No available
    agent to submit job"."""
    manager, objects, agent, agent_grpc, runtime_env, metrics = free_ports(6)
    return [f"--node-manager-port={manager}", f"--object-manager-port={objects}",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}"]


def autoscaler_config(gcs_address: str) -> dict:
    """A head without GPUs and one GPU node type that starts at zero (as every type of cluster.yaml)."""
    return {
        "cluster_name": "thorax-test", "max_workers": 1, "upscaling_speed": 1.0, "idle_timeout_minutes": 10,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 3}, "node_config": {}, "max_workers": 0},
            "gpu_node": {"resources": {"CPU": 2, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 1},
        },
        "head_node_type": "ray.head.default", "auth": {}, "docker": {}, "file_mounts": {},
        "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


class Cluster:
    def __init__(self, dashboard: str, token: str, config_path: str):
        self.dashboard, self.token, self.config_path = dashboard, token, config_path

    def submit(self, entrypoint: str, *, token: str | None = "own", timeout: float = 900) -> tuple[int, str]:
        """`ray job submit --working-dir . -- ENTRYPOINT` as the README says, from a client environment
        with the cluster's token (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN); returns (exit code, output)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(PATH=VENV_BIN + os.pathsep + env["PATH"], RAY_AUTH_MODE="token" if token else "disabled")
        if token:
            env["RAY_AUTH_TOKEN"] = self.token if token == "own" else token
        command = [os.path.join(VENV_BIN, "ray"), "job", "submit", "--address", self.dashboard,
                   "--working-dir", REPO, "--", *shlex.split(entrypoint)]
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def autoscaling_cluster(tmp_path_factory, s3_server):
    """`ray start --head --autoscaling-config` with token auth (started after the S3 server, so its nodes
    see the AWS variables as a real cluster's nodes see their instance role)."""
    folder = tmp_path_factory.mktemp("autoscaler")
    gcs, dashboard = free_ports(2)
    config_path = str(folder / "cluster.yaml")
    with open(config_path, "w") as handle:
        yaml.safe_dump(autoscaler_config(f"127.0.0.1:{gcs}"), handle)
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PATH=VENV_BIN + os.pathsep + env["PATH"], RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token,
               RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1", PYTHONPATH=FAKE_GPUS)
    # Its own temp dir: Ray's job supervisor gives each job the address of the cluster last started in the temp
    # dir (`ray_current_cluster`), so with the default /tmp/ray a Ray started meanwhile by another test process
    # (pytest-xdist) would receive this cluster's jobs.
    temp_dir = tempfile.mkdtemp(prefix="rayc-", dir="/tmp")  # short: Ray's socket paths live under it
    head = subprocess.Popen([os.path.join(VENV_BIN, "ray"), "start", "--head", "--block", f"--port={gcs}",
                             f"--temp-dir={temp_dir}",
                             f"--autoscaling-config={config_path}", "--num-cpus=3", "--include-dashboard=true",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", *node_ports()],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        cluster = Cluster(f"http://127.0.0.1:{dashboard}", token, config_path)
        deadline = time.monotonic() + 180
        while True:
            code, output = cluster.submit("python -c \"print('up')\"", timeout=120)
            if code == 0:
                break
            assert time.monotonic() < deadline and head.poll() is None, output[-2000:]
            time.sleep(3)
        yield cluster
    finally:
        stop_cluster(head, gcs)


def stop_cluster(head: subprocess.Popen, gcs_port: int) -> None:
    """A throwaway cluster: SIGTERM, a few seconds' grace (Ray's own graceful stop of every process took
    ~35 s), then SIGKILL for its process group and for any process of this cluster outside it (found by
    its GCS port on the command line)."""
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    head.wait()
    address = re.compile(rf":{gcs_port}(?!\d)")
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(address.search(part) for part in process.info["cmdline"] or ()):
                process.kill()


def alive_gpus(cluster: Cluster) -> list[float]:
    """GPUs of each alive node, from the State API's REST endpoint (what `ray list nodes` reads), with the
    cluster's token."""
    request = urllib.request.Request(f"{cluster.dashboard}/api/v0/nodes",
                                     headers={"Authorization": f"Bearer {cluster.token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        nodes = json.load(response)["data"]["result"]["result"]
    return [node["resources_total"].get("GPU", 0) for node in nodes if node["state"] == "ALIVE"]


@pytest.fixture(scope="module")
def s3_prepared(ray_local, learnable_images, s3_server):
    """The learnable images prepared straight to s3:// (as a cluster user stores them)."""
    import boto3

    from thorax_ray.data.pipeline import ImageConfig
    from thorax_ray.data.prepare import PrepareConfig, prepare
    from thorax_ray.data.splits import SplitConfig

    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket="thorax-cluster")
    prepare(PrepareConfig(data=str(learnable_images / "raw"), out="s3://thorax-cluster/prepared",
                          image=ImageConfig(size=64), split=SplitConfig(val_fraction=0.25)))
    return "s3://thorax-cluster"


def test_the_jobs_api_refuses_a_client_without_the_token(autoscaling_cluster):
    code, output = autoscaling_cluster.submit("python -c print(1)", token=None, timeout=120)
    assert code != 0 and "uthenticat" in output  # AuthenticationError / Unauthenticated
    code, output = autoscaling_cluster.submit("python -c print(1)", token="0" * 64, timeout=120)
    assert code != 0


def test_local_storage_on_a_cluster_that_can_grow_fails_at_once(autoscaling_cluster, s3_prepared):
    started = time.monotonic()
    code, output = autoscaling_cluster.submit(
        f"python jobs/train.py --data {s3_prepared}/prepared --model mlp --storage /tmp/thorax-runs "
        f"--cluster-config {autoscaling_cluster.config_path}")
    assert code != 0 and "--storage /tmp/thorax-runs is a local path" in output, output[-3000:]
    assert "gpu_node x1" in output  # the node type the job counted
    assert time.monotonic() - started < 120


def test_train_score_evaluate_start_the_gpu_node_from_zero(autoscaling_cluster, s3_prepared, tmp_path):
    """The runbook's chain: the jobs ask for GPUs (auto), the autoscaler starts the GPU node type from zero
    workers, training runs on it, scoring's actor pool asks for GPU actors, evaluation reads the scores."""
    from thorax_ray.checkpoint import epoch_checkpoints, load_payload, run_metrics
    from thorax_ray.data.sources import DataConfig, open_source
    from thorax_ray.scoring import read_scores

    cluster, bucket = autoscaling_cluster, s3_prepared
    assert alive_gpus(cluster) == [0]  # only the head, no GPU up
    flags = f"--cluster-config {cluster.config_path}"
    code, logs = cluster.submit(f"python jobs/train.py --data {bucket}/prepared --model small_cnn --size 64 "
                                f"--epochs 1 --workers 1 --storage {bucket}/runs --name chain {flags}")
    assert code == 0, logs[-4000:]
    assert "1 workers on GPUs" in logs and "[chain] epoch 1/1" in logs and "[train] done" in logs
    assert sorted(alive_gpus(cluster)) == [0, 1]  # the GPU node was started for the job
    metrics = run_metrics(f"{bucket}/runs/chain")
    assert metrics["epochs_run"] == 1 and metrics["val"]["mean_auroc"] is not None
    checkpoints = epoch_checkpoints(f"{bucket}/runs/chain")
    assert [e for e, _ in checkpoints] == [1] and load_payload(checkpoints[0][1]).split_hash == metrics["split_hash"]

    code, logs = cluster.submit(f"python jobs/score.py --checkpoint {bucket}/runs/chain --input {bucket}/prepared "
                                f"--out {bucket}/scores --batch-size 64 {flags}")
    assert code == 0, logs[-4000:]
    assert "x 1 GPU actors" in logs  # the autoscaling pool asked for GPU actors
    frame = read_scores(f"{bucket}/scores")
    rows = open_source(DataConfig(data=f"{bucket}/prepared")).manifest
    assert len(frame) == len(rows) and frame["image_index"].is_unique  # every input image exactly once
    assert set(frame["image_index"]) == set(rows["image_index"]) and frame["heatmap"].notna().all()

    evaluation = tmp_path / "evaluation"
    code, logs = cluster.submit(f"python jobs/evaluate.py --scores cnn={bucket}/scores --data {bucket}/prepared "
                                f"--out {evaluation} --bootstrap 20")
    assert code == 0, logs[-4000:]
    model = json.loads((evaluation / "metrics.json").read_text())["models"]["cnn"]
    assert len(model["auroc"]) == 14 and 0 <= model["mean_auroc"] <= 1
    assert model["n_images"] == int((rows["split"] == "test").sum())


def test_fake_gpus_sitecustomize_puts_ray_train_on_the_cpu_with_gloo():
    """The test support the fake cluster's processes load: Ray Train's device is the CPU, its process group gloo."""
    script = ("import ray.train.torch as t; print(t.get_device());"
              "trainer = t.TorchTrainer(lambda: None, scaling_config=__import__('ray').train.ScalingConfig(num_workers=1));"
              "print(trainer.backend_config.backend)")
    env = {**os.environ, "PYTHONPATH": FAKE_GPUS}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["cpu", "gloo"]
