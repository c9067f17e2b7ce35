"""What other engines see of a scoring output: after a run killed between writing its files and committing
them, DuckDB (its own delta_scan, and over deltalake's dataset as pandas users read it) sees exactly the rows
`read_scores` returns, locally and on the moto server; a naive Parquet glob does not, until the dead run is
cleaned. The job itself, killed with SIGKILL right before its commit, is in tests/jobs/test_interrupts.py."""
from __future__ import annotations

import importlib.util
import os

import pytest

from tests.scoring.test_output import SCHEMA, commit_run, write_dead_run
from thorax_ray import storage
from thorax_ray.scoring.delta import open_table
from thorax_ray.scoring.output import clean_uncommitted, read_scores

duckdb = pytest.importorskip("duckdb")

KEY = ["image_index", "model_id", "run_id", "batch_date"]


def delta_extension_connection():
    """A DuckDB connection with its `delta` extension loaded: installed in DuckDB's extension folder, or shipped
    by the duckdb-ext-delta package for this DuckDB version (no download); skips the test otherwise."""
    connection = duckdb.connect()
    try:
        connection.execute("LOAD delta")
        return connection
    except duckdb.Error:
        pass
    spec = importlib.util.find_spec("duckdb_ext")
    for root in (spec.submodule_search_locations if spec else []):
        version = f"v{duckdb.__version__}"
        folder = os.path.join(root, "extensions", version)
        for platform in os.listdir(folder) if os.path.isdir(folder) else []:
            path = os.path.join(folder, platform, "delta.duckdb_extension")
            if os.path.exists(path):
                connection.execute(f"LOAD '{path}'")
                return connection
    pytest.skip(f"DuckDB {duckdb.__version__}'s delta extension is not installed (pip install duckdb-ext-delta "
                "of the same version, or INSTALL delta where DuckDB can download it)")


def rows(frame) -> list[tuple]:
    return sorted(map(tuple, frame[KEY].astype(str).itertuples(index=False)))


def duckdb_over_deltalake(out: str, endpoint_url: str | None = None):
    """What a pandas/DuckDB user reading the table through deltalake sees."""
    dataset = open_table(storage.join(out, "scores"), endpoint_url=endpoint_url).to_pyarrow_dataset()
    connection = duckdb.connect()
    connection.register("scores", dataset)
    return connection.sql(f"SELECT {', '.join(KEY)} FROM scores").df()


def killed_output(out: str) -> None:
    """Two committed runs, then a run whose files were written and that died before its commit."""
    commit_run(out, "20240501T000000Z-aaaaaa", "m1", ["a.png", "b.png", "c.png"], [True, True, False])
    commit_run(out, "20240502T000000Z-bbbbbb", "m1", ["d.png"], batch_date="2024-05-02")
    write_dead_run(out, "20240503T000000Z-cccccc", ["e.png", "f.png"])


def test_duckdb_delta_scan_sees_exactly_read_scores_rows_after_a_killed_run(tmp_path):
    out = str(tmp_path / "out")
    killed_output(out)
    expected = rows(read_scores(out))
    assert [r[0] for r in expected] == ["a.png", "b.png", "d.png"]
    connection = delta_extension_connection()
    scanned = connection.sql(f"SELECT {', '.join(KEY)} FROM delta_scan('{out}/scores')").df()
    assert rows(scanned) == expected
    assert rows(duckdb_over_deltalake(out)) == expected


def test_a_naive_parquet_glob_counts_the_dead_run_until_it_is_cleaned(tmp_path):
    """Why the docs send every engine to the Delta log: a glob of the table's folder is no reader of it."""
    out = str(tmp_path / "out")
    killed_output(out)
    glob = f"SELECT {', '.join(KEY)} FROM read_parquet('{out}/scores/**/*.parquet', hive_partitioning = true)"
    connection = duckdb.connect()
    assert len(connection.sql(glob).df()) == 5  # the killed run's two rows too
    clean_uncommitted(out, older_than_s=0)
    assert rows(connection.sql(glob).df()) == rows(read_scores(out))


def test_duckdb_over_the_table_on_moto_sees_exactly_read_scores_rows_after_a_killed_run(s3_bucket):
    out = f"{s3_bucket}/out"
    killed_output(out)
    dead = storage.filesystem(out)[0].glob(f"{out.split('://')[1]}/scores/**/run_id=20240503T000000Z-cccccc/*.parquet")
    assert len(dead) == 1  # the killed run's file is in the table's folder, not in its log
    expected = rows(read_scores(out))
    assert [r[0] for r in expected] == ["a.png", "b.png", "d.png"]
    assert rows(duckdb_over_deltalake(out)) == expected


def test_a_commit_that_fails_after_the_log_holds_it_is_not_made_again(tmp_path, monkeypatch):
    """A commit that S3 applied but whose answer was lost: the log holds the run, so it counts as committed."""
    from thorax_ray.scoring import delta

    out = str(tmp_path / "out")
    commit_run(out, "20240501T000000Z-aaaaaa", "m1", ["a.png"])
    monkeypatch.setattr(delta, "open_table", lambda uri, **kwargs: None)  # "no table": the create fails
    version = delta.commit_files(storage.join(out, "scores"), [], SCHEMA, partition="2024-05-01",
                                 record={"run_id": "20240501T000000Z-aaaaaa"})
    with pytest.raises(delta.DeltaCommitError, match="commit to .* failed"):
        delta.commit_files(storage.join(out, "scores"), [], SCHEMA, partition="2024-05-01",
                           record={"run_id": "20240502T000000Z-bbbbbb"})
    monkeypatch.undo()
    assert version == 0 and len(read_scores(out)) == 1
