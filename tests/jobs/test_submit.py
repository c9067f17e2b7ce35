"""`jobs/train.py` submitted through Ray's Jobs API to a two-node cluster started with `ray start`
(head + worker node on this machine), as `ray job submit --working-dir . -- python jobs/train.py` does."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from thorax_ray.train.checkpoint import epoch_checkpoints, load_payload

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def node_ports() -> list[str]:
    manager, objects, agent, agent_grpc, runtime_env, metrics = free_ports(6)
    return [f"--node-manager-port={manager}", f"--object-manager-port={objects}",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}"]


@pytest.fixture(scope="module")
def two_node_cluster():
    """`ray start --head` and a second `ray start --address` node, from this virtualenv (jobs inherit its PATH)."""
    venv_bin = os.path.dirname(sys.executable)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": venv_bin + os.pathsep + os.environ["PATH"]}
    env.pop("RAY_ADDRESS", None)
    gcs, dashboard = free_ports(2)
    worker_temp = tempfile.mkdtemp(prefix="rw-", dir="/tmp")  # short: Unix socket paths live under it
    ray = os.path.join(venv_bin, "ray")
    head = subprocess.Popen([ray, "start", "--head", "--block", f"--port={gcs}", "--num-cpus=3",
                             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                             *node_ports()], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        from ray.job_submission import JobSubmissionClient

        address = f"http://127.0.0.1:{dashboard}"
        client = None
        deadline = time.monotonic() + 120
        while client is None:
            try:
                client = JobSubmissionClient(address)
            except Exception:  # noqa: BLE001 - dashboard not up yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        # Its own temp dir, as on a separate machine: nodes sharing one session dir also share the unpacked
        # `working_dir` packages, and one node's runtime-env GC deletes a package that jobs on the other
        # node still run in (seen as `[Errno 2] No such file or directory` from a job's getcwd).
        worker = subprocess.Popen([ray, "start", "--block", f"--address=127.0.0.1:{gcs}", "--num-cpus=2",
                                   f"--temp-dir={worker_temp}", *node_ports()],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield client
    finally:
        for process in (worker, head):
            if process is not None:
                process.send_signal(signal.SIGTERM)
        for process in (worker, head):
            if process is not None:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
        shutil.rmtree(worker_temp, ignore_errors=True)


def run_job(client, entrypoint: str, timeout_s: float = 600) -> tuple[str, str]:
    from ray.job_submission import JobStatus

    job_id = client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": REPO,
                                                                   "env_vars": {"RAY_AUTH_MODE": "disabled"}})
    deadline = time.monotonic() + timeout_s
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, f"job {job_id} still {status} after {timeout_s} s"
        time.sleep(2)
    return status, client.get_job_logs(job_id)


def wait_for_two_nodes(client) -> None:
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + 120
    while True:
        status, logs = run_job(client, "python -c \"import ray; ray.init(); "
                                       "print('alive nodes:', sum(n['Alive'] for n in ray.nodes()))\"")
        assert status == JobStatus.SUCCEEDED, logs
        if "alive nodes: 2" in logs:
            return
        assert time.monotonic() < deadline, logs
        time.sleep(2)


def test_train_job_submitted_to_two_node_cluster(two_node_cluster, learnable_images, tmp_path):
    from ray.job_submission import JobStatus

    wait_for_two_nodes(two_node_cluster)

    storage = tmp_path / "runs"
    status, logs = run_job(two_node_cluster, f"python jobs/train.py --data {learnable_images / 'prepared'} "
                                             f"--model small_cnn --size 64 --epochs 2 --workers 2 "
                                             f"--storage {storage} --name submitted")
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "[submitted] epoch 2/2" in logs and "[train] done" in logs
    run_dir = storage / "submitted"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"] == "small_cnn" and metrics["epochs_run"] == 2
    assert metrics["val"]["mean_auroc"] is not None and 0 <= metrics["best_epoch"] <= 1
    checkpoints = epoch_checkpoints(str(run_dir))
    assert [epoch for epoch, _ in checkpoints] == [0, 1]
    assert load_payload(checkpoints[-1][1])["split_hash"] == metrics["split_hash"]


def test_train_score_evaluate_chain_through_jobs_api(two_node_cluster, learnable_images, tmp_path):
    """The runbook's pipeline as three Jobs API submissions on the two-node cluster: train -> score (every
    prepared image exactly once) -> evaluate the scores."""
    from ray.job_submission import JobStatus

    from thorax_ray.scoring import read_scores
    from thorax_ray.train.config import DataConfig
    from thorax_ray.train.data import open_source

    wait_for_two_nodes(two_node_cluster)
    prepared = learnable_images / "prepared"
    storage, scores, evaluation = tmp_path / "runs", tmp_path / "scores", tmp_path / "evaluation"

    status, logs = run_job(two_node_cluster, f"python jobs/train.py --data {prepared} --model small_cnn --size 64 "
                                             f"--epochs 1 --workers 2 --storage {storage} --name chain")
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    checkpoints = epoch_checkpoints(str(storage / "chain"))
    assert [epoch for epoch, _ in checkpoints] == [0] and os.path.exists(os.path.join(checkpoints[0][1], "model.pt"))

    status, logs = run_job(two_node_cluster, f"python jobs/score.py --checkpoint {storage / 'chain'} "
                                             f"--input {prepared} --out {scores} --batch-size 64")
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    frame = read_scores(str(scores))
    rows = open_source(DataConfig(data=str(prepared))).manifest
    assert len(frame) == len(rows) and frame["image_index"].is_unique  # every input image exactly once
    assert set(frame["image_index"]) == set(rows["image_index"]) and frame["heatmap"].notna().all()

    status, logs = run_job(two_node_cluster, f"python jobs/evaluate.py --scores cnn={scores} --data {prepared} "
                                             f"--out {evaluation} --bootstrap 20")
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    metrics = json.loads((evaluation / "metrics.json").read_text())
    model = metrics["models"]["cnn"]
    assert len(model["auroc"]) == 14 and model["mean_auroc"] is not None and 0 <= model["mean_auroc"] <= 1
    assert model["n_images"] == int((rows["split"] == "test").sum())
