"""thorax_ray.cli.run_main's one-line endings for the output's lease, as the jobs are run (`python jobs/X.py`,
their `__main__` block): an output another run holds (LeaseBusy) and a run whose lease another run took over
before its commit (LeaseLost) each end with one line on stderr and exit 75, no traceback. The jobs run
in-process with Ray, the preflight checks and the stage's work replaced by a stand-in that takes the output's
real lease (thorax_ray.data.staged.staged_run), as prepare and score do; no Ray is started."""
from __future__ import annotations

import json
import os
import runpy
import sys

import pytest

from thorax_ray.data.staged import staged_run
from thorax_ray.lease import acquire_lease

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE = {"prepare": "thorax_ray.data.prepare.prepare", "score": "thorax_ray.scoring.score.score"}


def run_job(name: str, argv: list[str], work, monkeypatch, capsys) -> tuple[int, str]:
    """`python jobs/<name>.py ARGV` with its stage function replaced by `work(config)`: (exit code, stderr)."""
    for target, stand_in in {"thorax_ray.ray_setup.init_ray": lambda *a, **k: True,
                             "thorax_ray.cluster.cluster_capacity": lambda *a, **k: None,
                             "thorax_ray.cli.setup_logging": lambda *a, **k: None,
                             "thorax_ray.checkpoint.resolve_checkpoint": lambda uri, **k: uri,
                             "thorax_ray.models.tta.check_checkpoint_tta": lambda *a, **k: None,
                             STAGE[name]: lambda config, **k: work(config)}.items():
        monkeypatch.setattr(target, stand_in)
    monkeypatch.setattr(sys, "argv", [f"jobs/{name}.py", *argv])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(os.path.join(REPO, "jobs", f"{name}.py"), run_name="__main__")
    return exited.value.code, capsys.readouterr().err


def job_argv(name: str, tmp_path) -> list[str]:
    for folder in ("data", "checkpoint"):
        (tmp_path / folder).mkdir(exist_ok=True)
    out = str(tmp_path / "out")
    if name == "prepare":
        return ["--data", str(tmp_path / "data"), "--out", out]
    return ["--checkpoint", str(tmp_path / "checkpoint"), "--input", str(tmp_path / "data"), "--out", out]


def takes_the_lease(config) -> None:
    with staged_run(config.out, os.path.join(config.out, "_staging", "run"), ttl_s=config.lock_ttl_s,
                    about={"run_id": "this-run"}) as staged:
        staged.commit("_commits/run.json", {"run": "this-run"})


def loses_the_lease(config) -> None:
    """Takes the output's lease; before the commit another run takes it over (its record replaces ours)."""
    with staged_run(config.out, os.path.join(config.out, "_staging", "run"), ttl_s=config.lock_ttl_s,
                    about={"run_id": "this-run"}) as staged:
        with open(os.path.join(config.out, "_lock.json"), "w") as lock:
            json.dump({"token": "another-run", "host": "elsewhere", "pid": 1, "run_id": "successor"}, lock)
        staged.commit("_commits/run.json", {"run": "this-run"})


@pytest.mark.parametrize("name, advice", [
    ("prepare", "run again later"),
    ("score", "run again later or pass --wait-for-lock SECONDS"),
])
def test_a_busy_output_ends_the_job_with_one_line_naming_the_holder_and_exit_75(name, advice, tmp_path,
                                                                                  monkeypatch, capsys):
    argv = job_argv(name, tmp_path)
    with acquire_lease(str(tmp_path / "out" / "_lock.json"), keep_alive=False, about={"run_id": "nightly-1"}):
        code, err = run_job(name, argv, takes_the_lease, monkeypatch, capsys)
    assert code == 75
    assert err.splitlines() == [err.strip()], err
    assert err.startswith(f"error: not started: {tmp_path / 'out' / '_lock.json'} is held by another run (")
    assert "run_id nightly-1" in err and err.strip().endswith(f"; {advice}")
    assert not (tmp_path / "out" / "_commits").exists()


@pytest.mark.parametrize("name", ["prepare", "score"])
def test_a_lease_taken_over_before_the_commit_ends_the_job_with_one_line_and_exit_75(name, tmp_path, monkeypatch,
                                                                                     capsys):
    code, err = run_job(name, job_argv(name, tmp_path), loses_the_lease, monkeypatch, capsys)
    assert code == 75
    assert err.splitlines() == [err.strip()], err
    assert err.strip() == (f"error: {tmp_path / 'out' / '_lock.json'}: expired and taken over by another run "
                           "(nothing of this run was committed)")
    assert not (tmp_path / "out" / "_commits").exists() and not (tmp_path / "out" / "_staging" / "run").exists()


def test_a_job_that_takes_a_free_lease_commits_and_exits_0(tmp_path, monkeypatch, capsys):
    """The stand-in is a real run: with nobody else on the output it commits (and prepare prints its summary)."""
    def commits(config):
        takes_the_lease(config)
        return type("Summary", (), {"format": lambda self: "done"})()

    code, _ = run_job("prepare", job_argv("prepare", tmp_path), commits, monkeypatch, capsys)
    assert code == 0
    assert json.loads((tmp_path / "out" / "_commits" / "run.json").read_text()) == {"run": "this-run"}


def test_a_gpu_node_that_cannot_run_cuda_ends_the_job_with_its_one_line(capsys):
    """Ray hands a worker's CudaUnusable to the driver inside its own error text (here as jobs/train.py raises
    it: `training failed: <Ray's error>`); before, that was a traceback of Ray's error."""
    from thorax_ray.cli import run_main

    ray_text = ("TrainingFailedError: Training failed due to worker errors:\n[Rank 0 worker]\nTraceback (most recent "
                "call last):\n  File \"loop.py\", line 40, in start_worker\nthorax_ray.node_check.CudaUnusable: node "
                "ip-10-0-1-23 (10.0.1.23): CUDA is not usable for this GPU job: no CUDA device visible\n")

    def main(argv):
        raise RuntimeError(f"training failed: {ray_text}")

    with pytest.raises(SystemExit) as stop:
        run_main(main, [])
    assert stop.value.code == 69
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: node ip-10-0-1-23 (10.0.1.23): CUDA is not usable for this GPU job: no CUDA device visible"]
