"""Decisions taken from what the cluster has and what its autoscaler can launch: GPU use, how many trials or
actors fit, local paths refused on a multi-node cluster; all before any work starts."""
import os
import subprocess
import sys
import time

import pytest

from thorax_ray.cluster import (CPU_ROLE, ClusterCapacity, ClusterError, NodeType, check_shared_storage,
                                find_cluster_config, parse_use_gpu, read_node_types, resolve_use_gpu)
from thorax_ray.scoring.config import ScoreConfig
from thorax_ray.scoring.pipeline import plan_actors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_YAML = os.path.join(REPO, "cluster.yaml")

HEAD_ONLY = ClusterCapacity(alive_nodes=1, resources_up={"CPU": 8.0})
COLD_GPU_CLUSTER = ClusterCapacity(alive_nodes=1, resources_up={"CPU": 2.0},
                                   node_types=(NodeType("gpu_train", {"CPU": 192.0, "GPU": 8.0}, 16),
                                               NodeType("gpu_score", {"CPU": 16.0, "GPU": 1.0}, 8)),
                                   config_path="cluster.yaml", max_worker_nodes=24)
LOCAL = ClusterCapacity(alive_nodes=1, resources_up={"CPU": 4.0}, local=True)


def test_the_shipped_cluster_yaml_gpu_node_types_are_seen_although_none_is_up():
    types, max_workers = read_node_types(CLUSTER_YAML)
    assert {t.name: (t.resources.get("GPU", 0), t.max_workers) for t in types} == {
        "gpu_train": (8, 16), "gpu_score": (1, 8), "cpu": (0, 4)}  # the head is not a worker type
    assert max_workers == 24


def test_auto_uses_gpus_the_autoscaler_can_launch():
    assert resolve_use_gpu("auto", COLD_GPU_CLUSTER) is True  # the old code looked at what is up: CPUs
    assert COLD_GPU_CLUSTER.most("GPU") == 8 * 16 + 8
    assert resolve_use_gpu("auto", HEAD_ONLY) is False and resolve_use_gpu("false", COLD_GPU_CLUSTER) is False


def test_true_fails_at_once_when_the_cluster_can_never_provide_the_gpus():
    with pytest.raises(ClusterError, match="can never provide them.*pass --cluster-config"):
        resolve_use_gpu("true", HEAD_ONLY)
    with pytest.raises(ClusterError, match="private local Ray"):
        resolve_use_gpu("true", LOCAL)
    with pytest.raises(ClusterError, match="asks for 200 GPU"):
        resolve_use_gpu("true", COLD_GPU_CLUSTER, gpus_needed=200)
    assert resolve_use_gpu(True, COLD_GPU_CLUSTER, gpus_needed=8) is True


@pytest.mark.parametrize("value, expected", [(None, "auto"), (True, "true"), (False, "false"), ("AUTO", "auto"),
                                             ("yes", "true"), ("off", "false")])
def test_use_gpu_setting_forms(value, expected):
    assert parse_use_gpu(value) == expected


def test_use_gpu_typo_is_an_error_naming_the_choices():
    with pytest.raises(ClusterError, match="auto, true, false"):
        parse_use_gpu("maybe")


def test_a_private_ray_runs_as_much_work_at_once_as_the_machine_has_cores():
    """A private local Ray advertises CPUs beyond the cores as room for training's data tasks, not for more
    trials: two smoke trials at once on 2 cores were ~16 Ray processes (the raylet's "N PYTHON worker processes"
    warning) and no faster than one at a time."""
    two_cores = ClusterCapacity(alive_nodes=1, resources_up={"CPU": 4.0}, local=True, cores=2)
    assert two_cores.cpus_for(CPU_ROLE) == 2
    assert ClusterCapacity(alive_nodes=1, resources_up={"CPU": 4.0}).cpus_for(CPU_ROLE) == 4  # a cluster joined
    assert ClusterCapacity(alive_nodes=1, resources_up={"CPU": 1.0}, local=True, cores=2).cpus_for(CPU_ROLE) == 1


def test_local_paths_refused_on_a_cluster_with_or_able_to_launch_more_nodes():
    with pytest.raises(ClusterError, match="--storage runs is a local path"):
        check_shared_storage("runs", COLD_GPU_CLUSTER, what="--storage")
    with pytest.raises(ClusterError):
        check_shared_storage("/data", ClusterCapacity(alive_nodes=2, resources_up={"CPU": 4.0}), what="--data")
    check_shared_storage("s3://bucket/runs", COLD_GPU_CLUSTER, what="--storage")
    check_shared_storage("/mnt/efs/runs", COLD_GPU_CLUSTER, what="--storage", shared_fs=True)
    check_shared_storage("runs", HEAD_ONLY, what="--storage")
    check_shared_storage("runs", LOCAL, what="--storage")


def test_cluster_config_lookup(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("THORAX_CLUSTER_CONFIG", raising=False)
    assert find_cluster_config() is None
    (tmp_path / "ray_bootstrap_config.yaml").write_text("available_node_types: {}\n")
    assert find_cluster_config() == str(tmp_path / "ray_bootstrap_config.yaml")  # where `ray up` puts it
    monkeypatch.setenv("THORAX_CLUSTER_CONFIG", CLUSTER_YAML)
    assert find_cluster_config() == CLUSTER_YAML
    with pytest.raises(ClusterError, match="not found"):
        find_cluster_config(str(tmp_path / "nope.yaml"))


def test_scoring_pool_scales_from_what_can_be_launched():
    plan = plan_actors(ScoreConfig(checkpoint="c", input="i", out="o"), COLD_GPU_CLUSTER)
    assert (plan.min_actors, plan.max_actors, plan.gpus) == (1, 136, 1.0)
    half = plan_actors(ScoreConfig(checkpoint="c", input="i", out="o", gpus_per_actor=0.5, max_actors=4),
                       COLD_GPU_CLUSTER)
    assert (half.max_actors, half.gpus) == (4, 0.5) and half.describe() == "1..4 x 0.5 GPU"
    cpu = plan_actors(ScoreConfig(checkpoint="c", input="i", out="o"), HEAD_ONLY)
    assert (cpu.min_actors, cpu.max_actors, cpu.gpus) == (1, 1, 0.0)
    with pytest.raises(ClusterError):
        plan_actors(ScoreConfig(checkpoint="c", input="i", out="o", use_gpu="true"), HEAD_ONLY)


@pytest.mark.slow  # runs a job in a subprocess
def test_train_job_asking_for_a_gpu_on_this_machine_fails_before_any_work(metadata_only, tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("RAY_ADDRESS", None)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "jobs/train.py", "--data", str(metadata_only), "--model", "mlp",
                             "--use-gpu", "true", "--storage", str(tmp_path / "runs")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "can never provide them" in errors[0], result.stderr[-3000:]
    assert not (tmp_path / "runs").exists()
    assert time.monotonic() - started < 120
