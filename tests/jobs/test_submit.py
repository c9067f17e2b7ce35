"""The runbook's path on a cluster that scales from zero: `ray job submit` with Ray's token authentication
to a head started with an autoscaler (Ray's fake multi-node provider, the one Ray's own autoscaler tests
use) whose only GPU node type has `min_workers: 0`. Training and scoring must ask for GPUs and the
autoscaler must start the GPU node; data, checkpoints and scores live on a real S3-protocol server (moto),
as a multi-node cluster needs.

The GPUs are Ray resources only: jobs schedule GPU workers and actors exactly as on a real cluster, and the
arithmetic stays on the CPU with gloo (tests/jobs/fake_gpus/sitecustomize.py, on the cluster's PYTHONPATH), where
CUDA can be made unusable on a node type for one job (FAKE_CUDA_UNUSABLE_ON in its runtime env).

The module's tests share one cluster, in file order: nodes started by one test stay up for the next (the
autoscaler's idle_timeout_minutes), so the test that shows the scoring pool growing from zero runs before the
chain, whose training can start gpu_score nodes (see there), and the tests after the chain find gpu_train up."""
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

from tests.helpers import env_without_session_ray

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.dirname(sys.executable)
FAKE_GPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_gpus")
FAKE_CUDA_UNUSABLE_ON = "THORAX_FAKE_CUDA_UNUSABLE_ON"  # read by fake_gpus/sitecustomize.py: a node resource


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


MAX_WORKERS_HERE = {"gpu_train": 1, "gpu_score": 2, "cpu": 1}  # per type (cluster.yaml: 16, 8, 4)


def shipped_node_types() -> dict:
    """The worker node types of the shipped cluster.yaml (names, GPUs, node-role resources), each starting at
    zero workers as there, with CPUs (and role units, one per CPU) capped at 2 and max_workers at MAX_WORKERS_HERE
    to fit a 2-core machine;
    plus a head without GPUs."""
    with open(os.path.join(REPO, "cluster.yaml")) as handle:
        shipped = yaml.safe_load(handle)
    types = {"ray.head.default": {"resources": {"CPU": 3}, "node_config": {}, "max_workers": 0}}
    for name, spec in shipped["available_node_types"].items():
        if name != shipped["head_node_type"]:
            resources = {key: (value if key == "GPU" else min(value, 2)) for key, value in spec["resources"].items()}
            types[name] = {"resources": resources, "node_config": {}, "min_workers": 0,
                           "max_workers": MAX_WORKERS_HERE[name]}
    return types


def autoscaler_config(gcs_address: str) -> dict:
    """The fake multi-node provider with the shipped cluster.yaml's node types (shipped_node_types)."""
    return {
        "cluster_name": "thorax-test", "max_workers": sum(MAX_WORKERS_HERE.values()), "upscaling_speed": 1.0,
        "idle_timeout_minutes": 10,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "available_node_types": shipped_node_types(),
        "head_node_type": "ray.head.default", "auth": {}, "docker": {}, "file_mounts": {},
        "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


class Cluster:
    def __init__(self, dashboard: str, token: str, config_path: str, gcs: str):
        self.dashboard, self.token, self.config_path, self.gcs = dashboard, token, config_path, gcs

    def submit(self, entrypoint: str, *, token: str | None = "own", timeout: float = 900,
               runtime_env: dict | None = None) -> tuple[int, str]:
        """`ray job submit --working-dir . -- ENTRYPOINT` as the README says, from a client environment
        with the cluster's token (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN), with `runtime_env` besides when given;
        returns (exit code, output)."""
        env = env_without_session_ray()
        env.update(PATH=VENV_BIN + os.pathsep + env["PATH"], RAY_AUTH_MODE="token" if token else "disabled")
        if token:
            env["RAY_AUTH_TOKEN"] = self.token if token == "own" else token
        extra = ["--runtime-env-json", json.dumps(runtime_env)] if runtime_env else []
        command = [os.path.join(VENV_BIN, "ray"), "job", "submit", "--address", self.dashboard,
                   "--working-dir", REPO, *extra, "--", *shlex.split(entrypoint)]
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
    env = env_without_session_ray()
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
        cluster = Cluster(f"http://127.0.0.1:{dashboard}", token, config_path, f"127.0.0.1:{gcs}")
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


def state_api(cluster: Cluster, what: str) -> list[dict]:
    """The State API's REST listing of `what` (nodes, actors; what `ray list` reads), with the cluster's token."""
    request = urllib.request.Request(f"{cluster.dashboard}/api/v0/{what}?limit=10000",
                                     headers={"Authorization": f"Bearer {cluster.token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["data"]["result"]["result"]


def nodes_with(cluster: Cluster, resource: str) -> int:
    """Alive nodes that have `resource` (GPU, or a node role such as thorax_train)."""
    nodes = state_api(cluster, "nodes")
    return sum(1 for node in nodes if node["state"] == "ALIVE" and node["resources_total"].get(resource, 0) > 0)


RAY_TRAIN_ACTORS = ("TrainController", "RayTrainWorker")  # what a TorchTrainer's fit() starts first


def ray_train_actors(cluster: Cluster) -> int:
    """Ray Train's controller and worker actors the cluster has ever had (dead ones are listed too)."""
    return sum(1 for actor in state_api(cluster, "actors") if actor.get("class_name") in RAY_TRAIN_ACTORS)


def driver_env(cluster: Cluster) -> dict:
    """A driver started on the head, as `ray job submit` starts one (the cluster's address and token)."""
    env = env_without_session_ray()
    env.update(PATH=VENV_BIN + os.pathsep + env["PATH"], RAY_ADDRESS=cluster.gcs, RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=cluster.token, PYTHONPATH=REPO)
    return env


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
    assert "gpu_train x1" in output  # the node types the job counted
    assert time.monotonic() - started < 120


FIRST_SCORED = 12  # PNGs scored by the scoring-first test


def test_a_scoring_pool_of_two_starts_two_gpu_score_nodes_from_zero(autoscaling_cluster, s3_prepared,
                                                                     synthetic_small, tmp_path):
    """Scoring first, on a folder of PNGs (not prepared shards: no Parquet sampling tasks, which ask for plain
    CPUs and can make the autoscaler start other node types): the pool's two GPU actors start two gpu_score nodes from
    zero, so the pool grows beyond one node, and every image is scored once. Before the chain, whose training
    may start gpu_score nodes itself."""
    import shutil

    from tests.helpers import make_checkpoint, upload_tree
    from thorax_ray.scoring import read_scores

    cluster, bucket = autoscaling_cluster, s3_prepared
    assert nodes_with(cluster, "thorax_score") == 0  # no scoring node up
    pngs = sorted(synthetic_small.glob("images_*/images/*.png"))[:FIRST_SCORED]
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for png in pngs:
        shutil.copy(png, incoming / png.name)
    upload_tree(incoming, f"{bucket}/first/incoming")
    make_checkpoint(tmp_path / "checkpoint", "small_cnn", size=64)
    upload_tree(tmp_path / "checkpoint", f"{bucket}/first/checkpoint")
    code, logs = cluster.submit(f"python jobs/score.py --checkpoint {bucket}/first/checkpoint "
                                f"--input {bucket}/first/incoming --out {bucket}/first/scores --batch-size 4 "
                                f"--min-actors 2 --cluster-config {cluster.config_path}")
    assert code == 0, logs[-4000:]
    assert ("placement: 2 scoring actors x {CPU 1, GPU 1, thorax_score 1} on node type gpu_score only; "
            "decode tasks x {CPU 1, thorax_score 1} on the same node type") in logs
    assert nodes_with(cluster, "thorax_score") == 2  # both started for this job
    frame = read_scores(f"{bucket}/first/scores")
    assert sorted(frame["image_index"]) == sorted(png.name for png in pngs)  # every image exactly once
    assert frame["heatmap"].notna().all()


def test_train_score_evaluate_start_the_gpu_node_from_zero(autoscaling_cluster, s3_prepared, tmp_path):
    """The runbook's chain: the jobs ask for GPUs (auto) of their own node type, the autoscaler starts that type
    from zero workers: training on gpu_train; scoring's pool of two actors on the two gpu_score nodes (started
    from zero by the scoring-first test above, and no scoring actor lands on the idle training node); evaluation
    reads the scores."""
    from thorax_ray.checkpoint import epoch_checkpoints, load_payload, run_metrics
    from thorax_ray.data.sources import DataConfig, open_source
    from thorax_ray.scoring import read_scores

    cluster, bucket = autoscaling_cluster, s3_prepared
    assert nodes_with(cluster, "thorax_train") == 0  # no training node up
    flags = f"--cluster-config {cluster.config_path}"
    code, logs = cluster.submit(f"python jobs/train.py --data {bucket}/prepared --model small_cnn --size 64 "
                                f"--epochs 1 --workers 1 --storage {bucket}/runs --name chain {flags}")
    assert code == 0, logs[-4000:]
    assert "1 workers on GPUs" in logs and "[chain] epoch 1/1" in logs and "[train] done" in logs
    assert "placement: 1 training workers x {CPU 1, GPU 1, thorax_train 1} on node type gpu_train only" in logs
    assert nodes_with(cluster, "thorax_train") == 1  # started for the job, its workers and data tasks run there
    # (Ray Data's Parquet sampling tasks ask for a plain CPU each and are not steered: while they wait,
    # the autoscaler may start nodes of other types too, here cpu and gpu_score; they do none of the job's work.)
    metrics = run_metrics(f"{bucket}/runs/chain")
    assert metrics["epochs_run"] == 1 and metrics["val"]["mean_auroc"] is not None
    checkpoints = epoch_checkpoints(f"{bucket}/runs/chain")
    assert [e for e, _ in checkpoints] == [1] and load_payload(checkpoints[0][1]).split_hash == metrics["split_hash"]

    code, logs = cluster.submit(f"python jobs/score.py --checkpoint {bucket}/runs/chain --input {bucket}/prepared "
                                f"--out {bucket}/scores --batch-size 64 --min-actors 2 {flags}")
    assert code == 0, logs[-4000:]
    assert ("placement: 2 scoring actors x {CPU 1, GPU 1, thorax_score 1} on node type gpu_score only; "
            "decode tasks x {CPU 1, thorax_score 1} on the same node type") in logs
    assert "x 1 GPU actors" in logs  # the autoscaling pool asked for GPU actors
    assert (nodes_with(cluster, "thorax_score"), nodes_with(cluster, "thorax_train")) == (2, 1)
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


def test_a_gpu_job_on_a_node_that_cannot_run_cuda_ends_before_ray_train_starts(autoscaling_cluster, s3_prepared):
    """The pre-flight CUDA check (thorax_ray.placement.wait_until_placed): with CUDA made unusable on the gpu_train
    node (the fake-GPU stand-in, through the job's runtime env), a GPU training job ends with one line naming that
    node and exit 69 while its placement group holds the node: before Ray Train starts its controller or any
    worker (before, the worker's own check failed inside Ray Train, which restarted the group on the same node up
    to --max-failures times first). After the chain, it finds the gpu_train node up (45 s here); alone, the
    autoscaler starts it."""
    cluster, bucket = autoscaling_cluster, s3_prepared
    train_actors = ray_train_actors(cluster)
    code, logs = cluster.submit(
        f"python jobs/train.py --data {bucket}/prepared --model small_cnn --size 64 --epochs 1 --workers 1 "
        f"--max-failures 3 --storage {bucket}/runs --name broken-cuda --cluster-config {cluster.config_path}",
        runtime_env={"env_vars": {FAKE_CUDA_UNUSABLE_ON: "thorax_train"}})
    assert code != 0 and "failed with exit code 69" in logs, logs[-4000:]
    assert "placement: 1 training workers x {CPU 1, GPU 1, thorax_train 1} on node type gpu_train only" in logs
    errors = {line for line in logs.splitlines() if line.startswith("error:")}  # the status message repeats it
    assert len(errors) == 1, logs[-4000:]
    line = errors.pop()
    assert line.startswith(f"error: node {socket.gethostname()} (") and "node type gpu_train" in line, line
    assert line.endswith("): CUDA is not usable for this GPU job: a tensor op on cuda:0 failed: CUDA error: unknown "
                         "error (tests/jobs/fake_gpus: CUDA made unusable on nodes with thorax_train)"), line
    assert "[broken-cuda] epoch" not in logs and "Traceback" not in logs
    assert ray_train_actors(cluster) == train_actors  # Ray Train never started


def test_training_that_cannot_be_placed_says_what_it_waits_for_then_exits_75(autoscaling_cluster, metadata_only,
                                                                             tmp_path):
    """Too few launchable GPUs: another run holds the only gpu_train node the autoscaler may launch here. The
    job says what it waits for, then gives up with one line and exit 75 at --placement-timeout (before: Ray
    Train retried the worker group for ever, silently)."""
    cluster = autoscaling_cluster
    holder = ("import ray; from ray.util.placement_group import placement_group; ray.init(); "
              "group = placement_group([{'GPU': 8, 'thorax_train': 1}], name='other-run', lifetime='detached'); "
              "assert group.wait(timeout_seconds=180)")
    subprocess.run([sys.executable, "-c", holder], env=driver_env(cluster), check=True, timeout=240, capture_output=True)
    assert nodes_with(cluster, "thorax_train") == 1
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "jobs/train.py", "--data", str(metadata_only), "--model", "mlp", "--use-gpu", "true",
         "--workers", "1", "--epochs", "1", "--storage", str(tmp_path / "runs"), "--shared-fs",
         "--placement-timeout", "25", "--cluster-config", cluster.config_path],
        cwd=REPO, env=driver_env(cluster), capture_output=True, text=True, timeout=300)
    assert result.returncode == 75, result.stdout[-3000:] + result.stderr[-3000:]
    plan = "1 x {CPU 1, GPU 1, thorax_train 1} on node type gpu_train"
    waiting = [line for line in result.stdout.splitlines() if "for the cluster to place" in line]
    assert waiting and plan in waiting[0] and "gives up after 25 s" in waiting[0], result.stdout[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"could not place {plan} within 25 s" in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and time.monotonic() - started < 150
    assert nodes_with(cluster, "thorax_train") == 1  # it waited for its own type: no other node type started


def test_fake_gpus_sitecustomize_puts_ray_train_on_the_cpu_with_gloo():
    """The test support the fake cluster's processes load: Ray Train's device is the CPU, its process group gloo."""
    script = ("import ray.train.torch as t; print(t.get_device());"
              "trainer = t.TorchTrainer(lambda: None, scaling_config=__import__('ray').train.ScalingConfig(num_workers=1));"
              "print(trainer.backend_config.backend);"
              "from thorax_ray.node_check import require_cuda_if_ray_gave_a_gpu as check, problem_line;"
              "print(check(), problem_line())")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([FAKE_GPUS, REPO]), FAKE_CUDA_UNUSABLE_ON: "thorax_train"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["cpu", "gloo", "None", "None"]  # CUDA "works" (outside Ray: no node to break)
