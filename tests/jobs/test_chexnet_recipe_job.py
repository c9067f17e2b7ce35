"""The CheXNet recipe as the README tells a user to run it, with torchvision's ImageNet weights file in a
temporary torch hub cache (TORCH_HOME), never downloaded: `--pretrained imagenet` from the flag and from the
shipped config, to a finished checkpoint; without the file, one line naming the exact cache path and the URL,
exit 2, before Ray starts."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch
import torchvision

from thorax_ray.checkpoint import load_payload

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEIGHTS_FILE = "densenet121-a639ec97.pth"  # the name torchvision's DenseNet121_Weights.IMAGENET1K_V1 has
WEIGHTS_URL = "https://download.pytorch.org/models/" + WEIGHTS_FILE


def job_env(torch_home, extra_env: dict | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCH_HOME": str(torch_home), **(extra_env or {})}
    if not extra_env:
        env.pop("RAY_ADDRESS", None)
    return env


def train_job(*args: str, torch_home, extra_env: dict | None = None, timeout: int = 600):
    return subprocess.run([sys.executable, "jobs/train.py", *args], cwd=REPO, env=job_env(torch_home, extra_env),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", [
    ["--model", "densenet121", "--pretrained", "imagenet"],
    ["--config", "configs/chexnet.yaml"],
], ids=["flag", "config"])
def test_without_the_weights_file_one_line_names_the_cache_path_and_url(command, synthetic_small, tmp_path):
    started = time.monotonic()
    result = train_job(*command, "--data", str(synthetic_small), "--storage", str(tmp_path / "runs"),
                       torch_home=tmp_path / "torch")
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    expected = tmp_path / "torch" / "hub" / "checkpoints" / WEIGHTS_FILE
    assert result.stderr.strip().splitlines() == [
        f"error: --pretrained imagenet: torchvision's ImageNet weights for densenet121 are not in the torch hub "
        f"cache: {expected} is missing; download {WEIGHTS_URL} to that path (or set TORCH_HOME to a folder whose "
        "hub/checkpoints/ holds it)"]
    assert "Ray" not in result.stdout and not (tmp_path / "runs").exists()  # before Ray started
    assert time.monotonic() - started < 60


@pytest.fixture
def torch_hub_with_densenet(tmp_path):
    """TORCH_HOME whose hub cache holds a DenseNet-121 state dict under torchvision's file name."""
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.densenet121(weights=None).state_dict(), folder / WEIGHTS_FILE)
    return tmp_path / "torch"


@pytest.mark.slow  # two jobs train (joining the session's Ray, as `ray job submit` jobs join their cluster)
def test_readme_recipe_commands_train_to_a_checkpoint(learnable_images, torch_hub_with_densenet, tmp_path,
                                                      ray_job_env):
    data, small = str(learnable_images / "prepared"), ["--size", "64", "--epochs", "1", "--limit", "32"]
    # the synthetic dataset has NIH's lists, so its prepared output has the official split (the recipe asks random)
    commands = {"chexnet": ["--config", "configs/chexnet.yaml", "--data", data, "--split-kind", "official", *small],
                "flags": ["--model", "densenet121", "--pretrained", "imagenet", "--data", data, "--workers", "1",
                          "--name", "flags", *small]}
    env = job_env(torch_hub_with_densenet, ray_job_env)
    started = {name: subprocess.Popen([sys.executable, "jobs/train.py", *command, "--storage", str(tmp_path / "runs")],
                                      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for name, command in commands.items()}  # side by side: the suite's time
    for name, process in started.items():
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-6000:]
        metrics = json.loads((tmp_path / "runs" / name / "metrics.json").read_text())
        assert metrics["epochs_run"] == 1 and metrics["init"]["kind"] == "imagenet"
        payload = load_payload(str(tmp_path / "runs" / name / metrics["best_checkpoint"]))
        assert payload.model_build_config["init"]["source"] == "torchvision DenseNet121_Weights.IMAGENET1K_V1"
        assert payload.history[0]["val"]["loss"] > 0  # validation loss computed every epoch
    chexnet = json.loads((tmp_path / "runs" / "chexnet" / "metrics.json").read_text())
    assert chexnet["config"]["optim"]["select_by"] == "val_loss" and chexnet["config"]["augment"]["hflip"] is True
