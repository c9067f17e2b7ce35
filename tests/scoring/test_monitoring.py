"""Scoring and monitoring together: the summary's drift lines, --fail-on-drift and its exit code, and one run
on Ray that writes its record after its commit."""
import dataclasses
import os

import numpy as np

from jobs.score import build_config, exit_code, parse_args
from tests.helpers import make_checkpoint
from tests.monitoring.records import reference
from thorax_ray import exit_codes
from thorax_ray.labels import FINDINGS
from thorax_ray.monitoring.run import UNAVAILABLE, monitor_batch, read_run_records
from thorax_ray.scoring import ScoreConfig, read_scores
from thorax_ray.scoring.summary import ScoreSummary


def summary(monitoring=None) -> ScoreSummary:
    return ScoreSummary(out="OUT", input="IN", run_id="r1", batch_date="2024-01-01", model_id="m", model_name="x",
                        method="none", input_rows=10, scored=10, skipped=0, quarantined={}, deferred=0, files=1,
                        bytes=100, elapsed_s=1.0, compute_s=0.5, model_s=0.2, actors="1..1 CPU",
                        monitoring=monitoring)


def drifted_record():
    rng = np.random.default_rng(0)
    probabilities = np.clip(rng.beta(1, 6, size=(100, len(FINDINGS))) + np.r_[0.3, np.zeros(13)], 0, 1)
    return {"run_id": "r1", **monitor_batch(probabilities, np.zeros(100), ["csv"] * 100, reference())}


def test_the_summary_prints_one_line_per_drifted_finding():
    text = summary(drifted_record()).format().splitlines()
    assert [line for line in text if line.startswith("DRIFT")] == [
        line for line in text if line.startswith("DRIFT            Atelectasis: PSI ")]
    assert len([line for line in text if line.startswith("DRIFT")]) == 1
    assert any(line.startswith("out-of-dist.     0 of 100 images (0.0%)") for line in text)
    assert text[-1] == "monitoring       1 of 14 findings drifted; OUT/monitoring/r1.json"


def test_without_a_reference_one_line_says_monitoring_is_unavailable():
    record = {"run_id": "r1", **monitor_batch(np.zeros((3, 14)), None, ["csv"] * 3, None)}
    lines = [line for line in summary(record).format().splitlines() if UNAVAILABLE in line]
    assert lines == [f"monitoring       {UNAVAILABLE} (probability summaries in OUT/monitoring/r1.json)"]


def test_drift_is_a_warning_unless_fail_on_drift():
    config = ScoreConfig(checkpoint="c", input="i", out="o")
    assert exit_code(config, summary(drifted_record())) == exit_codes.DONE
    failing = dataclasses.replace(config, fail_on_drift=True)
    assert exit_code(failing, summary(drifted_record())) == exit_codes.DRIFTED == 65
    assert exit_code(failing, summary(None)) == exit_codes.DONE  # nothing scored, nothing monitored


def test_the_flag_sets_the_config():
    base = ["--checkpoint", "c", "--input", "i", "--out", "o"]
    assert build_config(parse_args(base)).fail_on_drift is False
    assert build_config(parse_args([*base, "--fail-on-drift"])).fail_on_drift is True


def test_a_run_records_its_monitoring_after_its_commit(ray_local, synthetic_small, tmp_path):
    from thorax_ray.scoring.score import score

    make_checkpoint(tmp_path / "ckpt", size=64, payload={"validation_reference": reference(dim=128)})
    out = str(tmp_path / "out")
    config = ScoreConfig(checkpoint=str(tmp_path / "ckpt"), input=str(synthetic_small), out=out, batch_size=16,
                         method="none", max_images=40)
    first = score(config)
    records = read_run_records(out)
    assert [r["run_id"] for r in records] == [first.run_id] and records[0]["images"] == 40
    assert records[0]["metadata_sources"] == {"csv": 40} and records[0]["ood"]["images"] == 40
    scores = read_scores(out, run_id=first.run_id)
    assert scores["ood_score"].notna().all()
    assert any(line.startswith("monitoring ") for line in first.format().splitlines())
    make_checkpoint(tmp_path / "old", size=64)  # a checkpoint written before the reference
    old = score(dataclasses.replace(config, checkpoint=str(tmp_path / "old"), max_images=8))
    assert UNAVAILABLE in old.format()
    assert os.path.exists(os.path.join(out, "monitoring", f"{old.run_id}.json"))
