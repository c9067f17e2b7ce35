"""`bench/gpu.sh` (the one-GPU benchmark) runs end to end on CPU with tiny sizes: its table and closing
JSON line hold positive figures for every measure, and the fast path reports itself off on CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--model", "small_cnn", "--size", "32", "--source-size", "64", "--images", "96", "--batch-size", "8",
        "--score-batch-size", "8", "--warmup-steps", "1", "--train-steps", "3", "--score-batches", "2",
        "--threads", "1", "--device", "cpu"]


def test_gpu_bench_script_runs_tiny_on_cpu():
    env = {**os.environ, "PYTHON": sys.executable, "BENCH_TIMEOUT_S": "280"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(["bash", os.path.join(REPO, "bench", "gpu.sh"), *TINY], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    for row in ("training, synthetic tensors on the device", "training, prepared shards (Ray Data)",
                "input path alone (shards -> device)", "scoring, predictions only",
                "scoring, + fast all-class maps and boxes"):
        assert row in done.stdout, done.stdout[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "gpu" and figures["device"] == "cpu" and figures["gpu"] is None
    for key in ("train_synthetic_ips", "train_shards_ips", "input_only_ips", "score_predictions_ips",
                "score_fast_cam_ips", "fast_maps_cost_vs_predictions"):
        assert figures[key] > 0, (key, figures)
    assert figures["autocast"] is None and not figures["channels_last"] and not figures["compile"]
    assert figures["meets_goals"] is None  # goals are for an H100 only
    assert isinstance(figures["input_bound"], bool)
