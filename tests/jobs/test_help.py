"""`--help` of every job shows every option's default (issue 15: most were missing)."""
import importlib.util
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUIRED = {"--out", "--data", "--input", "--checkpoint", "--space", "--scores"}  # options a job has no default for
JOBS = ("demo", "evaluate", "maintain_scores", "make_synthetic", "manifest", "monitor", "prepare", "score", "train",
        "tune")


def job_module(name: str):
    spec = importlib.util.spec_from_file_location(f"job_{name}", os.path.join(REPO, "jobs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def option_blocks(help_text: str) -> dict[str, str]:
    """`--option` -> its help text, from the options section of a help page."""
    blocks: dict[str, str] = {}
    current = None
    for line in help_text.split("options:", 1)[1].splitlines():
        match = re.match(r"^  (-\w, )?(--[\w-]+)", line)
        if match:
            current = match.group(2)
            blocks[current] = line
        elif current:
            blocks[current] += " " + line.strip()
    return blocks


@pytest.mark.parametrize("name", JOBS)
def test_every_option_shows_its_default(name, capsys):
    with pytest.raises(SystemExit) as done:
        job_module(name).parse_args(["--help"])
    assert done.value.code == 0
    blocks = option_blocks(capsys.readouterr().out)
    assert len(blocks) > 3
    missing = {option for option, text in blocks.items() if option != "--help" and "default" not in text}
    assert missing <= REQUIRED, missing


def test_config_defaults_come_from_the_dataclass(capsys):
    from thorax_ray.train.config import TrainConfig

    with pytest.raises(SystemExit):
        job_module("train").parse_args(["--help"])
    blocks = option_blocks(capsys.readouterr().out)
    defaults = TrainConfig()
    assert f"(default: {defaults.optim.lr})" in blocks["--lr"]
    assert f"(default: {defaults.run.workers})" in blocks["--workers"]
    assert f"(default: {defaults.model.name})" in blocks["--model"]


def test_a_usage_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as done:
        job_module("make_synthetic").parse_args(["--out", "x", "--workers", "-1"])
    assert done.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: argument --workers: must be >= 0, got -1")
