"""jobs/score.py as a user runs it (a subprocess joining the session's Ray cluster), with overlays."""
import os
import subprocess
import sys

import pytest
from PIL import Image

from thorax_ray.scoring import read_scores
from tests.helpers import make_checkpoint

pytestmark = pytest.mark.slow  # runs the scoring job in a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_score_job_prints_counts_and_writes_overlays(ray_local, synthetic_small, tmp_path):
    make_checkpoint(tmp_path / "ckpt", "small_cnn", size=64)
    address = ray_local.get_runtime_context().gcs_address
    result = subprocess.run(
        [sys.executable, "jobs/score.py", "--checkpoint", str(tmp_path / "ckpt"), "--input", str(synthetic_small),
         "--out", str(tmp_path / "out"), "--batch-size", "16", "--overlays", str(tmp_path / "overlays"),
         "--limit", "3", "--address", address],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "scored           120" in result.stdout and "quarantined      0" in result.stdout
    assert "skipped          0" in result.stdout and f"output           {tmp_path / 'out' / 'scores'}" in result.stdout
    overlays = sorted(os.listdir(tmp_path / "overlays"))
    assert len(overlays) == 3 and all(name.endswith(".overlay.png") for name in overlays)
    first = sorted(read_scores(str(tmp_path / "out"))["image_index"])[0]
    assert overlays[0] == first.replace(".png", ".overlay.png")
    with Image.open(tmp_path / "overlays" / overlays[0]) as image:
        assert image.size[0] >= 300 and image.size[1] >= 300
