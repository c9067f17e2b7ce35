"""jobs/score.py as a user runs it (a subprocess joining the session's Ray cluster), with overlays."""
import os
import subprocess
import sys

import torch
from PIL import Image

from thorax_ray.models import create_model
from thorax_ray.scoring import read_scores
from thorax_ray.train.checkpoint import save_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_score_job_prints_counts_and_writes_overlays(ray_local, synthetic_small, tmp_path):
    torch.manual_seed(0)
    model = create_model("small_cnn")
    (tmp_path / "ckpt").mkdir()
    save_checkpoint(str(tmp_path / "ckpt"), {
        "model_name": "small_cnn", "model_build_config": model.build_config, "model_state": model.state_dict(),
        "preprocessing": {"channels": 1, "size": 64, "input_dtype": "uint8", "scale": 1 / 255, "mean": 0.449,
                          "std": 0.226}})
    address = ray_local.get_runtime_context().gcs_address
    result = subprocess.run(
        [sys.executable, "jobs/score.py", "--checkpoint", str(tmp_path / "ckpt"), "--input", str(synthetic_small),
         "--out", str(tmp_path / "out"), "--batch-size", "16", "--overlays", str(tmp_path / "overlays"),
         "--limit", "3", "--address", address],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "scored           120" in result.stdout and "quarantined      0" in result.stdout
    assert "skipped          0" in result.stdout and f"output           {tmp_path / 'out' / 'scores'}" in result.stdout
    overlays = sorted(os.listdir(tmp_path / "overlays"))
    assert len(overlays) == 3 and all(name.endswith(".overlay.png") for name in overlays)
    first = sorted(read_scores(str(tmp_path / "out"))["image_index"])[0]
    assert overlays[0] == first.replace(".png", ".overlay.png")
    with Image.open(tmp_path / "overlays" / overlays[0]) as image:
        assert image.size[0] >= 300 and image.size[1] >= 300
