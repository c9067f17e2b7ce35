"""Output plumbing without Ray: the datasink's files and quarantine rows, Delta commits, readers that see
the committed snapshot only (as DuckDB does), the per-model already-scored index, old-layout outputs and the
clean-up of dead runs."""
import datetime as dt
import json
import time
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import write_scores_commit
from thorax_ray.attribution import BOXES_TYPE
from thorax_ray.data.staged import new_run_id
from thorax_ray.labels import FINDING_COLUMNS
from thorax_ray.scoring.output import (CALIBRATED_COLUMNS, SCORES_QUARANTINE_COLUMNS, ScoresError, check_writable,
                                       clean_uncommitted, commit_quarantine, commit_scores, committed_files,
                                       committed_runs, output_size, pipeline_schema, quarantine_table,
                                       read_quarantine, read_scores, run_started, schema_metadata, score_schema,
                                       scored_index, write_table_file)
from thorax_ray.scoring.sink import ScoresDatasink

SCHEMA = score_schema(maps=True, feature_attributions=False)


def block(names, ok, model_id="m1", run_id="r", batch_date="2024-05-01"):
    n = len(names)
    columns = {
        "image_index": names, "path": [f"/x/{name}" for name in names], "model_id": [model_id] * n,
        "run_id": [run_id] * n, "batch_date": [batch_date] * n,
        "scored_at": [dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)] * n,
        "width": [1024] * n, "height": [1024] * n, "metadata_source": ["dicom", "csv", "none"][:n] + ["csv"] * (n - 3),
        **{c: np.full(n, 0.25, np.float32) for c in FINDING_COLUMNS},
        **{c: np.full(n, 0.125, np.float32) for c in CALIBRATED_COLUMNS}, "ood_score": np.full(n, 1.5, np.float32),
        "heatmap": [bytes(14 * 4)] * n,
        "boxes": [[{"finding": "Mass", "x": 1, "y": 2, "w": 3, "h": 4, "score": 0.9}]] * n,
        "ok": ok, "stage": ["" if good else "decode" for good in ok],
        "reason": ["" if good else "unsupported_format" for good in ok], "_compute_s": [0.5] * n, "_model_s": [0.25] * n,
    }
    return pa.table(columns, schema=pipeline_schema(SCHEMA))


def commit_run(out, run_id, model_id, names, ok=None, batch_date="2024-05-01"):
    """A run as score() commits it: the sink's files, then the scores commit, then the quarantine commit."""
    ok = ok or [True] * len(names)
    sink = ScoresDatasink(str(out), run_id, batch_date, SCHEMA, schema_metadata(scores={"model_id": model_id}))
    result = sink.write([block(names, ok, model_id, run_id, batch_date)], SimpleNamespace(task_idx=0))
    record = {"run_id": run_id, "batch_date": batch_date, "model_id": model_id, "tta": {"kind": "none"}}
    commit, entries = commit_scores(str(out), record, result.files, SCHEMA)
    table = quarantine_table(result.quarantined, run_id=run_id, batch_date=batch_date, model_id=model_id)
    quarantine = commit_quarantine(str(out), table, run_id=run_id, batch_date=batch_date, model_id=model_id)
    return result, {**record, "files": entries, "quarantine_files": quarantine, "commit": commit}


def write_dead_run(out, run_id, names, batch_date="2024-05-03"):
    """A run that wrote its files and was killed before its commit."""
    sink = ScoresDatasink(str(out), run_id, batch_date, SCHEMA, {})
    return sink.write([block(names, [True] * len(names), run_id=run_id, batch_date=batch_date)],
                      SimpleNamespace(task_idx=0))


def test_datasink_writes_good_rows_into_the_runs_folder_of_the_table_and_returns_failed_ones(tmp_path):
    sink = ScoresDatasink(str(tmp_path), "run1", "2024-05-01", SCHEMA, schema_metadata(scores={"model_id": "m1"}))
    result = sink.write([block(["a.png", "b.png"], [True, False]), block(["c.png"], [True])],
                        SimpleNamespace(task_idx=3))
    assert result.compute_s == 1.5 and result.model_s == 0.75
    assert result.metadata_sources == {"dicom": 2}  # counted over the written rows (a.png and c.png)
    assert list(result.quarantined["image_index"]) == ["b.png"] and list(result.quarantined["reason"]) == ["unsupported_format"]
    (uri, rows, size), = result.files
    assert "/scores/batch_date=2024-05-01/run_id=run1/part-00003-" in uri and rows == 2
    table = pq.read_table(uri)
    assert table.schema.names == [n for n in SCHEMA.names if n != "batch_date"]  # the partition lives in the log
    assert table.schema.field("boxes").type == BOXES_TYPE
    assert json.loads(table.schema.metadata[b"thorax_ray.scores"]) == {"model_id": "m1"}
    assert size == len(open(uri, "rb").read())


def test_readers_see_the_committed_snapshot_only_and_index_is_per_model(tmp_path):
    out = tmp_path / "out"
    assert read_scores(str(out)).empty and committed_runs(str(out)) == [] and read_quarantine(str(out)).empty
    _, record = commit_run(out, "20240501T000000Z-aaaaaa", "m1", ["a.png", "b.png", "c.png"], [True, True, False])
    assert record["files"][0]["path"].startswith("scores/batch_date=2024-05-01/run_id=20240501T000000Z-aaaaaa/")
    assert record["commit"].endswith("scores/_delta_log/00000000000000000000.json")
    assert record["quarantine_files"][0]["path"] == \
        "quarantine/batch_date=2024-05-01/run_id=20240501T000000Z-aaaaaa/part-0.parquet"
    commit_run(out, "20240502T000000Z-bbbbbb", "m2", ["a.png"], batch_date="2024-05-02")
    write_dead_run(out, "20240503T000000Z-cccccc", ["d.png"])

    frame = read_scores(str(out))
    assert sorted(frame["image_index"]) == ["a.png", "a.png", "b.png"]
    assert sorted(frame["batch_date"]) == ["2024-05-01", "2024-05-01", "2024-05-02"]  # from the partitions
    assert list(frame.columns) == SCHEMA.names and frame.attrs["tta"] == {"kind": "none"}
    assert sorted(read_scores(str(out), "m1")["image_index"]) == ["a.png", "b.png"]
    assert list(read_scores(str(out), run_id="20240502T000000Z-bbbbbb", columns=["model_id"])["model_id"]) == ["m2"]
    assert scored_index(str(out), "m1") == {"a.png", "b.png"} and scored_index(str(out), "m2") == {"a.png"}
    assert scored_index(str(out), "m3") == set()
    assert [r["run_id"] for r in committed_runs(str(out))] == ["20240501T000000Z-aaaaaa", "20240502T000000Z-bbbbbb"]
    assert len(committed_files(str(out))) == 2 and len(committed_files(str(out), model_id="m2")) == 1
    assert output_size(str(out)).rows == 3
    quarantine = read_quarantine(str(out))
    assert list(quarantine.columns) == list(SCORES_QUARANTINE_COLUMNS) and list(quarantine["image_index"]) == ["c.png"]
    assert quarantine["batch_date"].tolist() == ["2024-05-01"]


def test_a_run_that_scored_nothing_commits_its_record(tmp_path):
    out = tmp_path / "out"
    commit_run(out, "20240501T000000Z-aaaaaa", "m1", ["a.png"])
    commit_scores(str(out), {"run_id": "20240502T000000Z-bbbbbb", "batch_date": "2024-05-02", "model_id": "m1"},
                  [], SCHEMA)
    assert [r["run_id"] for r in committed_runs(str(out))][-1] == "20240502T000000Z-bbbbbb"
    assert list(read_scores(str(out))["image_index"]) == ["a.png"]


def test_a_run_with_a_new_column_adds_it_and_older_rows_read_it_as_null(tmp_path):
    out = tmp_path / "out"
    narrow = pa.schema([f for f in SCHEMA if f.name != "ood_score"])  # a table written before that column
    sink = ScoresDatasink(str(out), "20240401T000000Z-oooooo", "2024-04-01", narrow, {})
    old = sink.write([block(["z.png"], [True], run_id="20240401T000000Z-oooooo", batch_date="2024-04-01")],
                     SimpleNamespace(task_idx=0))
    commit_scores(str(out), {"run_id": "20240401T000000Z-oooooo", "batch_date": "2024-04-01", "model_id": "m1"},
                  old.files, narrow)
    commit_run(out, "20240501T000000Z-aaaaaa", "m1", ["a.png"])
    frame = read_scores(str(out)).set_index("image_index")
    assert frame.loc["a.png", "ood_score"] == 1.5 and frame["ood_score"].isna()["z.png"]


def test_old_layout_outputs_are_read_alongside_and_refused_for_writing(tmp_path):
    out = tmp_path / "out"
    old = block(["z.png"], [True]).select(SCHEMA.names).cast(SCHEMA)
    path = "scores/batch_date=2024-04-01/run_id=20240401T000000Z-oooooo/part-0.parquet"
    size = write_table_file(old, str(out / path))
    write_scores_commit(str(out), {"run_id": "20240401T000000Z-oooooo", "batch_date": "2024-04-01", "model_id": "m1",
                                   "files": [{"path": path, "rows": 1, "bytes": size}], "quarantine_files": []})
    assert list(read_scores(str(out))["image_index"]) == ["z.png"] and scored_index(str(out), "m1") == {"z.png"}
    with pytest.raises(ScoresError, match=r"holds 1 scoring run\(s\) in the layout before Delta tables .*--migrate$"):
        check_writable(str(out))


def test_clean_uncommitted_removes_only_old_dead_runs(tmp_path):
    out = tmp_path / "out"
    commit_run(out, "20240501T000000Z-aaaaaa", "m1", ["a.png"], [True])
    (out / "_staging" / "20240101T000000Z-0d0000").mkdir(parents=True)  # left by an older version
    for run_id in ("20240502T000000Z-dead01", new_run_id()):  # one long dead, one maybe still running
        write_dead_run(out, run_id, ["x.png"], batch_date="2024-05-02")
    removed = clean_uncommitted(str(out), older_than_s=3600)
    assert len(removed) == 2 and sum("dead01" in r for r in removed) == 1 and any("_staging" in r for r in removed)
    assert len(list((out / "scores").glob("*/run_id=*"))) == 2  # the committed run's and the young one's
    assert sorted(read_scores(str(out))["image_index"]) == ["a.png"]


def test_run_ids_sort_by_start_time():
    first = new_run_id(time.time() - 10)
    assert first < new_run_id() and abs(run_started(first) - (time.time() - 10)) < 2
    assert run_started("not-a-run") is None
