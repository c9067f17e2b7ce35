"""jobs/demo.py's scoring stage as `make demo` runs it: each model scored by jobs/score.py in a process of its own,
and that job's exit status turned into the demo's (a stopped job stops the demo as interrupted, a failed one
names the model). The whole demo is not run here (about 4.5 minutes at its smallest on 2 cores); its other
stages are the library calls the other tests run."""
from __future__ import annotations

import argparse

import pytest

from tests.data.prepared import prepare_here
from tests.helpers import make_checkpoint
from tests.jobs.test_help import job_module
from thorax_ray.interrupts import Interrupted
from thorax_ray.scoring import read_scores

demo = job_module("demo")
SIZE = 32


def demo_args(tmp_path) -> argparse.Namespace:
    return argparse.Namespace(out=str(tmp_path / "out"), verbose=False)


@pytest.mark.slow  # two score jobs (joined to the session's Ray, as the demo's would join a cluster)
def test_each_model_is_scored_by_the_score_job(synthetic_small, tmp_path, ray_job_env, monkeypatch):
    prepared = str(tmp_path / "prepared")
    prepare_here(str(synthetic_small), prepared, size=SIZE)
    make_checkpoint(tmp_path / "cnn", "small_cnn", size=SIZE)
    make_checkpoint(tmp_path / "mlp", "mlp", size=SIZE)
    for name, value in ray_job_env.items():
        monkeypatch.setenv(name, value)
    outputs = demo.score_models({"small_cnn": str(tmp_path / "cnn"), "mlp_follow_up": str(tmp_path / "mlp")},
                                prepared, demo_args(tmp_path))
    assert set(outputs) == {"small_cnn", "mlp_follow_up"}
    cnn, mlp = read_scores(outputs["small_cnn"]), read_scores(outputs["mlp_follow_up"])
    assert len(cnn) == len(mlp) == 120 and cnn["image_index"].is_unique and set(cnn["image_index"]) == set(
        mlp["image_index"])
    assert "heatmap" in cnn.columns and "heatmap" not in mlp.columns  # the MLP + follow-up #: probabilities only


@pytest.mark.parametrize("code, raised, message", [
    (130, Interrupted, "SIGINT"), (143, Interrupted, "SIGTERM"),
    (1, RuntimeError, r"scoring small_cnn failed \(exit 1; its output is above\)")])
def test_a_stopped_or_failed_score_job_stops_the_demo(tmp_path, monkeypatch, code, raised, message):
    job = tmp_path / "score.py"
    job.write_text(f"import sys\nsys.exit({code})\n")
    monkeypatch.setattr(demo, "SCORE_JOB", str(job))
    with pytest.raises(raised, match=message) as stopped:
        demo.score_models({"small_cnn": str(tmp_path / "run"), "fusion": str(tmp_path / "run2")}, "prepared",
                          demo_args(tmp_path))
    if raised is Interrupted:
        assert stopped.value.exit_code == code  # the demo ends as the job did
