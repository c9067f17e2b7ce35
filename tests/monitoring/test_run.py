"""A committed run's monitoring record: what it holds, where it is written (local and s3://), what the job
prints from it."""
import numpy as np
import pytest

from tests.monitoring.records import reference, score_rows
from thorax_ray import storage
from thorax_ray.labels import FINDINGS
from thorax_ray.monitoring.run import (UNAVAILABLE, describe, monitor_batch, monitor_committed_run, raised,
                                       read_run_records, record_uri)


def batch(n, *, shift=0.0, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(rng.beta(1, 6, size=(n, len(FINDINGS))) + shift, 0, 1)


def test_without_a_reference_the_record_says_so_and_keeps_the_summaries():
    record = monitor_batch(batch(10), None, ["csv"] * 8 + ["dicom", None], None)
    assert not record["available"] and record["unavailable"] == UNAVAILABLE
    assert record["metadata_sources"] == {"csv": 8, "dicom": 1, "none": 1}
    assert record["findings"]["Mass"]["psi"] is None and record["findings"]["Mass"]["images"] == 10
    assert not raised(record)
    record["run_id"] = "r1"
    assert describe(record, "OUT") == [("monitoring", f"{UNAVAILABLE} (probability summaries in OUT/monitoring/r1.json)")]


def test_a_shifted_batch_prints_one_line_per_drifted_finding_and_the_ood_line():
    stored = reference()
    record = {"run_id": "r2", **monitor_batch(batch(200, shift=0.3), np.r_[np.full(30, 99.0), np.zeros(170)],
                                              ["csv"] * 200, stored)}
    assert raised(record) and record["drifted"] == list(FINDINGS) and record["ood"]["alarm"]
    lines = describe(record, "OUT")
    assert [label for label, _ in lines] == ["DRIFT"] * 14 + ["out-of-dist.", "monitoring"]
    assert lines[0][1].startswith("Atelectasis: PSI ")
    assert "30 of 200 images (15.0%)" in lines[-2][1] and "ALARM" in lines[-2][1]
    # the reference's size, said with the share: a threshold from a few validation images flags more
    assert f"of {record['reference_rows']} validation images (1% expected)" in lines[-2][1]
    assert lines[-1][1] == "14 of 14 findings drifted; OUT/monitoring/r2.json"


def test_a_batch_like_validation_prints_no_drift_line():
    record = {"run_id": "r3", **monitor_batch(batch(200, seed=5), np.zeros(200), ["csv"] * 200, reference())}
    assert not raised(record)
    labels = [label for label, _ in describe(record, "OUT")]
    assert labels == ["out-of-dist.", "monitoring"]
    assert describe(record, "OUT")[-1][1].startswith("no finding drifted (largest PSI ")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_record_of_a_committed_run_is_written_under_out_and_read_back(where, tmp_path, request):
    out = str(tmp_path / "out") if where == "local" else request.getfixturevalue("s3_bucket") + "/scores"
    stored = reference()
    first = monitor_committed_run(out, score_rows(batch(50), np.zeros(50), ["csv"] * 50), run_id="20240101T000000Z-aa",
                                  batch_date="2024-01-01", model_id="m" * 16, model_name="small_cnn", reference=stored)
    second = monitor_committed_run(out, score_rows(batch(40, shift=0.3), np.full(40, 9.0), ["dicom"] * 40),
                                   run_id="20240102T000000Z-bb", batch_date="2024-01-02", model_id="m" * 16,
                                   model_name="small_cnn", reference=stored)
    assert first["images"] == 50 and not raised(first) and first["metadata_sources"] == {"csv": 50}
    assert second["images"] == 40 and raised(second) and second["metadata_sources"] == {"dicom": 40}
    assert storage.read_json(record_uri(out, "20240102T000000Z-bb")) == second
    assert [r["run_id"] for r in read_run_records(out)] == ["20240101T000000Z-aa", "20240102T000000Z-bb"]
    assert read_run_records(out, model_id="other") == []


def test_rows_without_ood_scores_give_no_ood_summary(tmp_path):
    record = monitor_committed_run(str(tmp_path), score_rows(batch(30), None, [None] * 30), run_id="r",
                                   batch_date="2024-01-01", model_id="m", model_name="x", reference=reference())
    assert record["ood"] is None and record["metadata_sources"] == {"none": 30}


def test_a_run_that_scored_nothing_writes_no_record(tmp_path):
    assert monitor_committed_run(str(tmp_path), score_rows(batch(0), None, []), run_id="r", batch_date="2024-01-01",
                                 model_id="m", model_name="x", reference=None) is None
    assert not (tmp_path / "monitoring").exists()
