"""Output plumbing without Ray: the datasink's files and quarantine rows, commits, readers that see
committed files only, the per-model already-scored index and the clean-up of dead runs."""
import datetime as dt
import json
import time
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers import write_scores_commit
from thorax_ray.attribution import BOXES_TYPE
from thorax_ray.data.staged import new_run_id
from thorax_ray.labels import FINDING_COLUMNS
from thorax_ray.scoring.output import (CALIBRATED_COLUMNS, SCORES_QUARANTINE_COLUMNS, clean_uncommitted,
                                       committed_runs, pipeline_schema, publish, quarantine_table, read_quarantine,
                                       read_scores, run_started, schema_metadata, score_schema, scored_index,
                                       staging_uri, write_table_file)
from thorax_ray.scoring.sink import ScoresDatasink

SCHEMA = score_schema(maps=True, feature_attributions=False)


def block(names, ok, model_id="m1", run_id="r"):
    n = len(names)
    columns = {
        "image_index": names, "path": [f"/x/{name}" for name in names], "model_id": [model_id] * n,
        "run_id": [run_id] * n, "batch_date": ["2024-05-01"] * n,
        "scored_at": [dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)] * n,
        "width": [1024] * n, "height": [1024] * n, "metadata_source": ["dicom", "csv", "none"][:n] + ["csv"] * (n - 3),
        **{c: np.full(n, 0.25, np.float32) for c in FINDING_COLUMNS},
        **{c: np.full(n, 0.125, np.float32) for c in CALIBRATED_COLUMNS},
        "heatmap": [bytes(14 * 4)] * n,
        "boxes": [[{"finding": "Mass", "x": 1, "y": 2, "w": 3, "h": 4, "score": 0.9}]] * n,
        "ok": ok, "stage": ["" if good else "decode" for good in ok],
        "reason": ["" if good else "unsupported_format" for good in ok], "_compute_s": [0.5] * n, "_model_s": [0.25] * n,
    }
    return pa.table(columns, schema=pipeline_schema(SCHEMA))


def commit_run(out, run_id, model_id, names, ok=None, batch_date="2024-05-01"):
    ok = ok or [True] * len(names)
    sink = ScoresDatasink(str(out), run_id, SCHEMA, schema_metadata(scores={"model_id": model_id}))
    result = sink.write([block(names, ok, model_id, run_id)], SimpleNamespace(task_idx=0))
    quarantine = []
    if len(result.quarantined):
        table = quarantine_table(result.quarantined, run_id=run_id, batch_date=batch_date, model_id=model_id)
        uri = staging_uri(str(out), run_id, "quarantine", "part-0.parquet")
        quarantine.append((uri, table.num_rows, write_table_file(table, uri)))
    record = {"run_id": run_id, "batch_date": batch_date, "model_id": model_id,
              "files": publish(str(out), run_id, batch_date, result.files, "scores"),
              "quarantine_files": publish(str(out), run_id, batch_date, quarantine, "quarantine")}
    write_scores_commit(str(out), record)
    return result, record


def test_datasink_writes_good_rows_and_returns_failed_ones(tmp_path):
    sink = ScoresDatasink(str(tmp_path), "run1", SCHEMA, schema_metadata(scores={"model_id": "m1"}))
    result = sink.write([block(["a.png", "b.png"], [True, False]), block(["c.png"], [True])],
                        SimpleNamespace(task_idx=3))
    assert result.compute_s == 1.5 and result.model_s == 0.75
    assert result.metadata_sources == {"dicom": 2}  # counted over the written rows (a.png and c.png)
    assert list(result.quarantined["image_index"]) == ["b.png"] and list(result.quarantined["reason"]) == ["unsupported_format"]
    (uri, rows, size), = result.files
    assert "/_staging/run1/scores/part-00003-" in uri and rows == 2
    table = pq.read_table(uri)
    assert table.schema.names == SCHEMA.names and table.schema.field("boxes").type == BOXES_TYPE
    assert json.loads(table.schema.metadata[b"thorax_ray.scores"]) == {"model_id": "m1"}
    assert size == len(open(uri, "rb").read())


def test_readers_see_committed_files_only_and_index_is_per_model(tmp_path):
    out = tmp_path / "out"
    assert read_scores(str(out)).empty and committed_runs(str(out)) == []
    _, record = commit_run(out, "20240501T000000Z-aaaaaa", "m1", ["a.png", "b.png", "c.png"], [True, True, False])
    assert record["files"][0]["path"].startswith("scores/batch_date=2024-05-01/run_id=20240501T000000Z-aaaaaa/")
    assert record["quarantine_files"][0]["path"] == \
        "quarantine/batch_date=2024-05-01/run_id=20240501T000000Z-aaaaaa/part-0.parquet"
    commit_run(out, "20240502T000000Z-bbbbbb", "m2", ["a.png"], batch_date="2024-05-02")
    # a run that wrote its files but died before its commit record
    sink = ScoresDatasink(str(out), "20240503T000000Z-cccccc", SCHEMA, {})
    dead = sink.write([block(["d.png"], [True])], SimpleNamespace(task_idx=0))
    publish(str(out), "20240503T000000Z-cccccc", "2024-05-03", dead.files, "scores")

    assert sorted(read_scores(str(out))["image_index"]) == ["a.png", "a.png", "b.png"]
    assert sorted(read_scores(str(out), "m1")["image_index"]) == ["a.png", "b.png"]
    assert scored_index(str(out), "m1") == {"a.png", "b.png"} and scored_index(str(out), "m2") == {"a.png"}
    assert scored_index(str(out), "m3") == set()
    quarantine = read_quarantine(str(out))
    assert list(quarantine.columns) == list(SCORES_QUARANTINE_COLUMNS) and list(quarantine["image_index"]) == ["c.png"]


def test_files_of_runs_before_metadata_source_are_read_alongside(tmp_path):
    out = tmp_path / "out"
    commit_run(out, "20240501T000000Z-aaaaaa", "m1", ["a.png"])
    old_schema = pa.schema([f for f in SCHEMA if f.name != "metadata_source"])
    old = block(["z.png"], [True]).select(old_schema.names).cast(old_schema)
    path = staging_uri(str(out), "20240401T000000Z-oooooo", "scores", "part-0.parquet")
    size = write_table_file(old, path)
    write_scores_commit(str(out), {"run_id": "20240401T000000Z-oooooo", "batch_date": "2024-04-01", "model_id": "m1",
                            "files": publish(str(out), "20240401T000000Z-oooooo", "2024-04-01",
                                             [(path, 1, size)], "scores"), "quarantine_files": []})
    frame = read_scores(str(out)).set_index("image_index")
    assert frame.loc["a.png", "metadata_source"] == "dicom" and frame["metadata_source"].isna()["z.png"]


def test_clean_uncommitted_removes_only_old_dead_runs(tmp_path):
    out = tmp_path / "out"
    commit_run(out, "20240501T000000Z-aaaaaa", "m1", ["a.png"])
    for run_id in ("20240502T000000Z-dead01", new_run_id()):  # one long dead, one maybe still running
        sink = ScoresDatasink(str(out), run_id, SCHEMA, {})
        written = sink.write([block(["x.png"], [True])], SimpleNamespace(task_idx=0))
        publish(str(out), run_id, "2024-05-02", written.files[:1], "scores")
        sink.write([block(["y.png"], [True])], SimpleNamespace(task_idx=1))  # still in staging
    removed = clean_uncommitted(str(out), older_than_s=3600)
    assert len(removed) == 3 and sum("dead01" in r for r in removed) == 2  # + the committed run's staging
    assert len(list((out / "_staging").iterdir())) == 1 and len(list((out / "scores").glob("*/run_id=*"))) == 2
    assert sorted(read_scores(str(out))["image_index"]) == ["a.png"]


def test_run_ids_sort_by_start_time():
    first = new_run_id(time.time() - 10)
    assert first < new_run_id() and abs(run_started(first) - (time.time() - 10)) < 2
    assert run_started("not-a-run") is None
