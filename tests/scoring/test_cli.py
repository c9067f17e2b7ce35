"""jobs/score.py as a user runs it (a subprocess joining the session's Ray cluster), with overlays, and with the
flags of its docstring's test-time augmentation example (--tta tencrop --method cam --max-map-side 0
--heatmap-bits 8), recorded in the score files and the commit record."""
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from thorax_ray.attribution import HEATMAP_METADATA_KEY
from thorax_ray.scoring import read_scores
from thorax_ray.scoring.output import SCORES_METADATA_KEY, committed_files, read_file_metadata
from tests.helpers import make_checkpoint

pytestmark = pytest.mark.slow  # runs the scoring job in a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_score_job_prints_counts_and_writes_overlays(ray_local, synthetic_small, tmp_path):
    make_checkpoint(tmp_path / "ckpt", "small_cnn", size=64)
    address = ray_local.get_runtime_context().gcs_address
    result = subprocess.run(
        [sys.executable, "jobs/score.py", "--checkpoint", str(tmp_path / "ckpt"), "--input", str(synthetic_small),
         "--out", str(tmp_path / "out"), "--batch-size", "16", "--overlays", str(tmp_path / "overlays"),
         "--limit", "3", "--address", address, "--tta", "tencrop", "--method", "cam", "--max-map-side", "0",
         "--heatmap-bits", "8"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "scored           120" in result.stdout and "quarantined      0" in result.stdout
    assert "method cam, tta tencrop (probabilities: mean over its views)\n" in result.stdout
    assert "skipped          0" in result.stdout and f"output           {tmp_path / 'out' / 'scores'}" in result.stdout
    overlays = sorted(os.listdir(tmp_path / "overlays"))
    assert len(overlays) == 3 and all(name.endswith(".overlay.png") for name in overlays)
    frame = read_scores(str(tmp_path / "out"))
    tta = frame.attrs["tta"]
    assert (tta["kind"], tta["resized_to"], len(tta["views"])) == ("tencrop", 73, 10)  # 64 px: resized to 73
    assert tta["heatmaps"] == "the un-augmented image (the attribution method's own pass)"
    assert "un-augmented validation predictions" in tta["calibration"]
    assert (frame.attrs["heatmap"]["shape"], frame.attrs["heatmap"]["levels"]) == ([14, 4, 4], "lossless")
    file_metadata = read_file_metadata(committed_files(str(tmp_path / "out"))[0])
    assert file_metadata[SCORES_METADATA_KEY]["tta"] == tta
    assert file_metadata[HEATMAP_METADATA_KEY] == json.loads(json.dumps(frame.attrs["heatmap"]))
    first = sorted(frame["image_index"])[0]
    assert overlays[0] == first.replace(".png", ".overlay.png")
    with Image.open(tmp_path / "overlays" / overlays[0]) as image:
        assert image.size[0] >= 300 and image.size[1] >= 300
