"""README: `python jobs/evaluate.py --checkpoint STORAGE/NAME --data D --split test --out DIR`, run as written (a
subprocess joined to the session's Ray) on a run folder, which means its best checkpoint."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import make_checkpoint, write_text
from thorax_ray.data.manifest import build_manifest

pytestmark = pytest.mark.slow  # a job subprocess on the session's Ray

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_readme_command_evaluates_a_runs_best_checkpoint_on_the_test_split(synthetic_small, tmp_path,
                                                                                 ray_job_env):
    run = tmp_path / "runs" / "thorax-small_cnn"
    make_checkpoint(run / "epoch_0001", "small_cnn", size=64, seed=1)
    make_checkpoint(run / "epoch_0002", "small_cnn", size=64, seed=2)
    write_text(run / "metrics.json", json.dumps({"best_checkpoint": "epoch_0002"}))
    out = tmp_path / "eval"
    done = subprocess.run([sys.executable, "jobs/evaluate.py", "--checkpoint", str(run),
                           "--data", str(synthetic_small), "--split", "test", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, **ray_job_env})
    assert done.returncode == 0, done.stdout + done.stderr
    manifest, _ = build_manifest(str(synthetic_small))
    test_rows = int((manifest["split"] == "test").sum())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n_images"] == test_rows  # every test row, once
    assert metrics["checkpoint"] == str(run / "epoch_0002")  # the run's best, not its latest or first
    assert f"small_cnn on test ({test_rows} images): mean AUROC" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == f"metrics: {out / 'metrics.json'}"
