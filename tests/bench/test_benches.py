"""Every benchmark under bench/ runs to its end at tiny size and closes with its figures (a bench that no test
runs breaks silently). `bench/gpu.sh` has its own tests (tests/bench/test_gpu_bench*.py). The figures at
this size mean nothing; only that each bench still runs is checked. The benches that accept a cluster join
the session's Ray (`ray_job_env`) instead of starting their own."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from thorax_ray.synthetic.dataset import SyntheticConfig, write_synthetic_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.slow  # each starts its own Ray and trains or scores


def run_bench(*command: str, ray_env: dict[str, str] | None = None, timeout: int = 420) -> str:
    """Runs a bench; with `ray_env` it joins that Ray, else it starts its own private one."""
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": REPO}
    env.pop("RAY_ADDRESS", None)
    env.update(ray_env or {})
    done = subprocess.run(list(command), cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


def closing_figures(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_ingest(tmp_path):
    out = run_bench(sys.executable, "bench/ingest.py", "--images", "24", "--size", "32", "--batch-size", "8",
                    "--data", str(tmp_path / "pngs"))
    assert closing_figures(out)["bench"] == "ingest"


def test_score(tmp_path, ray_job_env):
    out = run_bench(sys.executable, "bench/score.py", "--images", "16", "--size", "32", "--source-size", "64",
                    "--batch-size", "8", "--actor-cpus", "1", "--data", str(tmp_path / "pngs"),
                    "--address", ray_job_env["RAY_ADDRESS"], ray_env=ray_job_env)
    assert closing_figures(out)["bench"] == "score"


def test_score_metadata(tmp_path, ray_job_env):
    """The metadata MLP's scoring, and metadata_ig against Captum's per-class IntegratedGradients in one run
    (the ratio is > 10 at batch 32 on 2 CPUs; at this size only its sign and the values' agreement are checked)."""
    out = run_bench(sys.executable, "bench/score.py", "--model", "mlp", "--images", "16", "--size", "32",
                    "--source-size", "64", "--batch-size", "8", "--actor-cpus", "1", "--data", str(tmp_path / "pngs"),
                    "--address", ray_job_env["RAY_ADDRESS"], ray_env=ray_job_env)
    figures = closing_figures(out)
    assert figures["metadata_ig_speedup"] > 1 and figures["metadata_ig_max_abs_diff"] < 1e-5


def test_train_step_image_model_and_mlp(ray_job_env):
    out = run_bench(sys.executable, "bench/train_step.py", "--model", "small_cnn", "--size", "32", "--images", "240",
                    "--epochs", "2", "--rounds", "1", "--threads", "1", "--batch-size", "8", ray_env=ray_job_env)
    assert closing_figures(out)["ratio_ray_train"] > 0
    out = run_bench(sys.executable, "bench/train_step.py", "--model", "mlp", "--rows", "400", "--workers", "1",
                    ray_env=ray_job_env)
    assert closing_figures(out)["model"] == "mlp"


def test_epoch_overhead(ray_job_env):
    out = run_bench(sys.executable, "bench/epoch_overhead.py", "--size", "32", "--images", "240", "--epochs", "2",
                    "--batch-size", "8", "--workers", "1", ray_env=ray_job_env)
    assert closing_figures(out)["bench"] == "epoch_overhead"


def test_shuffle_ablation(tmp_path, ray_job_env):
    write_synthetic_dataset(SyntheticConfig(out=str(tmp_path / "data"), images=200, size=32, seed=1, difficulty=0.0),
                            progress=False)
    out = run_bench(sys.executable, "bench/shuffle_ablation.py", "--data", str(tmp_path / "data"), "--epochs", "1",
                    "--size", "32", "--batch-size", "8", "--workers", "1", ray_env=ray_job_env)
    assert closing_figures(out)["bench"] == "shuffle_ablation"


def test_chain(tmp_path, ray_job_env):
    out = run_bench("bash", "bench/chain.sh", "200", "32", str(tmp_path / "chain"), ray_env=ray_job_env, timeout=600)
    assert "[chain] done: 200 images of 32 px" in out
    for stage in ("manifest", "prepare", "train", "score", "evaluate"):
        assert f"[chain] {stage}" in out, out
