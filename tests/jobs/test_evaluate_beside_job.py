"""README "Two kinds of split in one report", run as written (subprocesses of jobs/prepare.py and jobs/evaluate.py,
joined to the session's Ray): the random-split preparation, its evaluation, then the official-split one with
--beside. Committed scores are fabricated (as jobs/score.py writes them); the raw synthetic dataset stands in
for data/demo and for the official-split prepared output."""
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from tests.helpers import write_scores_commit
from thorax_ray.data.manifest import build_manifest
from thorax_ray.labels import FINDING_COLUMNS
from thorax_ray.scoring.output import write_table_file

pytestmark = pytest.mark.slow  # two job subprocesses

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def committed_scores(out: str, manifest) -> str:
    rng = np.random.default_rng(0)
    labels = manifest[list(FINDING_COLUMNS)].to_numpy(float)
    columns = {"image_index": manifest["image_index"].tolist(), "model_id": ["m"] * len(manifest)}
    for i, column in enumerate(FINDING_COLUMNS):
        columns[column] = pa.array(np.clip(labels[:, i] * 0.5 + rng.random(len(manifest)) * 0.5, 0, 1), pa.float32())
    path = "scores/batch_date=2026-01-01/run_id=20260101T000000Z-aaaaaa/part-0.parquet"
    size = write_table_file(pa.table(columns), os.path.join(out, path))
    write_scores_commit(out, {"run_id": "20260101T000000Z-aaaaaa", "model_id": "m",
                              "files": [{"path": path, "rows": len(manifest), "bytes": size}]})
    return out


def job(name: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, f"jobs/{name}.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_the_readme_commands_set_a_random_split_run_beside_the_official_one(synthetic_small, tmp_path, ray_job_env):
    manifest, _ = build_manifest(str(synthetic_small))
    scores = committed_scores(str(tmp_path / "scores"), manifest)
    prepared = str(tmp_path / "demo-prepared-128-random")
    random_out, official_out = str(tmp_path / "evaluation-random-split"), str(tmp_path / "evaluation")
    job("prepare", "--data", str(synthetic_small), "--out", prepared, "--size", "128", "--split", "random",
        env=ray_job_env)
    job("evaluate", "--scores", f"small_cnn={scores}", "--data", prepared, "--out", random_out, "--bootstrap", "20",
        env=ray_job_env)
    done = job("evaluate", "--scores", f"small_cnn={scores}", "--data", str(synthetic_small), "--out", official_out,
               "--beside", random_out, "--bootstrap", "20", env=ray_job_env)
    assert "random patient split 70/10/20 (train/val/test), seed 0; evaluated separately, not paired" in done.stdout
    metrics = json.load(open(os.path.join(official_out, "metrics.json")))
    assert set(metrics["models"]) == {"small_cnn", "small_cnn@random"}
    assert metrics["data_split"]["kind"] == "official"
    assert metrics["models"]["small_cnn@random"]["data_split"]["kind"] == "random"
    assert "evaluated separately, not paired" in open(os.path.join(official_out, "report.html")).read()
