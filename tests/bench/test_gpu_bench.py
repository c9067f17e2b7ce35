"""`bench/gpu.sh` (the one-GPU benchmark) runs end to end on CPU with tiny sizes where Ray is installed (a
cluster node): besides the in-process measures (tests/bench/test_gpu_bench_without_ray.py) its table and
closing JSON line hold the Ray Data stream and the Ray Train loop, and the fast path reports itself off on CPU."""
from __future__ import annotations

import json

import pytest

from tests.bench.test_gpu_bench_without_ray import run_gpu_bench


@pytest.mark.slow
def test_gpu_bench_script_runs_tiny_on_cpu_with_ray(ray_job_env):
    done = run_gpu_bench(extra=["--ray-train"], **ray_job_env)  # on the session's Ray
    for row in ("training, synthetic tensors on the device, eager", "training, prepared shards (pyarrow), eager",
                "training, prepared shards (Ray Data), eager", "training, Ray Train loop (1 worker, epoch 2)",
                "input path alone (pyarrow shards -> device)", "scoring, predictions only",
                "scoring, + fast all-class maps and boxes"):
        assert row in done.stdout, done.stdout[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "gpu" and figures["device"] == "cpu" and figures["gpu"] is None and figures["ray"]
    for key in ("train_synthetic_eager_ips", "train_shards_ips", "train_shards_ray_ips", "train_ray_train_ips",
                "input_only_ips", "score_predictions_ips", "score_fast_cam_ips", "fast_maps_cost_vs_predictions"):
        assert figures[key] > 0, (key, figures)
    assert figures["autocast"] is None and not figures["channels_last"] and not figures["compile"]
    assert figures["train_synthetic_compiled_ips"] is None  # torch.compile is measured on GPU only (or --compile on)
    assert figures["meets_goals"] is None  # goals are for an H100/H200 only
    assert isinstance(figures["input_bound"], bool) and figures["skipped"] == []
