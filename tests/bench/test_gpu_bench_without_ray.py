"""`bench/gpu.sh` runs where the GPU machine this project is lent runs it: an interpreter without Ray,
Captum, s3fs, pydicom, pydantic or botocore (the project's dependencies that the machine's image lacks, per
/work/.library/device/KINDS.md; a `sitecustomize` on PYTHONPATH makes importing them fail). At tiny size on CPU
it prints every row of its table and one closing JSON line with positive figures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BLOCKED = ("ray", "captum", "s3fs", "pydicom", "pylibjpeg", "pydantic", "pydantic_core", "botocore")
TINY = ["--model", "small_cnn", "--size", "32", "--source-size", "64", "--images", "96", "--batch-size", "8",
        "--score-batch-size", "8", "--warmup-steps", "1", "--train-steps", "3", "--score-batches", "2",
        "--device", "cpu"]


def blocking_sitecustomize(folder) -> str:
    """A folder whose sitecustomize.py makes `import ray` (captum, s3fs, pydicom, and their submodules) fail."""
    (folder / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys

        class _Block:
            BLOCKED = {BLOCKED!r}

            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in self.BLOCKED:
                    raise ImportError(f"{{name}} is blocked: this interpreter mimics the GPU machine")
                return None

        sys.meta_path.insert(0, _Block())
    """))
    return str(folder)


def test_blocker_blocks(tmp_path):
    env = {**os.environ, "PYTHONPATH": blocking_sitecustomize(tmp_path)}
    for name in BLOCKED:
        done = subprocess.run([sys.executable, "-c", f"import {name}"], env=env, capture_output=True, text=True)
        assert done.returncode != 0 and "blocked" in done.stderr, (name, done.stderr[-500:])


def run_gpu_bench(extra: list[str] = (), **env_vars: str) -> subprocess.CompletedProcess:
    """`bash bench/gpu.sh` at tiny size on CPU, its own private Ray where Ray imports; asserts it exits 0."""
    env = {**os.environ, "PYTHON": sys.executable, "BENCH_TIMEOUT_S": "280", **env_vars}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(["bash", os.path.join(REPO, "bench", "gpu.sh"), *TINY, *extra], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


@pytest.mark.slow  # runs bench/gpu.sh in a subprocess
def test_gpu_bench_runs_without_ray_captum_s3fs_pydicom(tmp_path):
    done = run_gpu_bench(PYTHONPATH=blocking_sitecustomize(tmp_path))
    for row in ("training, synthetic tensors on the device, eager", "training, prepared shards (pyarrow), eager",
                "input path alone (pyarrow shards -> device)", "scoring, predictions only",
                "scoring, + fast all-class maps and boxes", "collectives in a nccl/gloo process group",
                "bf16 vs fp32, largest probability difference"):
        assert row in done.stdout, done.stdout[-3000:]
    assert "Ray is not installed here" in done.stdout
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "gpu" and figures["device"] == "cpu" and figures["gpu"] is None
    assert figures["ray"] is False and figures["train_shards_ray_ips"] is None
    for key in ("train_synthetic_eager_ips", "train_shards_ips", "input_only_ips", "score_predictions_ips",
                "score_fast_cam_ips", "fast_maps_cost_vs_predictions"):
        assert figures[key] > 0, (key, figures)
    assert figures["collectives"] == "ok (gloo, world size 1, cpu tensors)"
    assert figures["score_threads_per_actor"] == 1
    assert 0 <= figures["bf16_max_probability_difference"] < 0.5  # bf16 autocast on the CPU here
    assert figures["goals"] is None and figures["meets_goals"] is None  # goals are judged on an H100/H200 only


def test_goals_are_judged_on_h200_and_h100_only():
    from bench.gpu import goals_for

    assert goals_for("NVIDIA H200") == ("H200", 3000, 10000)
    assert goals_for("NVIDIA H100 80GB HBM3") == ("H100", 2500, 8000)
    assert goals_for("NVIDIA A100-SXM4-80GB") is None and goals_for(None) is None
