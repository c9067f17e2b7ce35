"""Upkeep of the scores tables without Ray: compaction makes the nightly small files few, vacuum deletes the
replaced ones, and readers return identical rows throughout; old-layout runs move into the tables; the
upkeep never runs beside a scoring run (the lease)."""
from __future__ import annotations

import pyarrow as pa
import pytest

from tests.helpers import write_scores_commit
from tests.scoring.test_output import SCHEMA, block, commit_run, write_dead_run
from thorax_ray.lease import LeaseBusy, acquire_lease
from thorax_ray.scoring.delta import open_table
from thorax_ray.scoring.maintain import compact, maintenance_lease, migrate, vacuum
from thorax_ray.scoring.output import (check_writable, committed_runs, read_quarantine, read_scores, scored_index,
                                       write_table_file)


def nights(out, count=4):
    for night in range(count):
        commit_run(out, f"2024050{night + 1}T000000Z-00000{night}", "m1", [f"{night}-a.png", f"{night}-b.png"],
                   [True, night % 2 == 0], batch_date="2024-05-0" + str(1 + night // 2))


def sorted_frame(frame):
    columns = [c for c in frame.columns if c not in ("heatmap", "boxes")]
    return frame[columns].sort_values("image_index").reset_index(drop=True)


def test_optimize_and_vacuum_make_files_fewer_and_keep_every_row(tmp_path):
    out = str(tmp_path / "out")
    nights(out)
    write_dead_run(out, "20240509T000000Z-dead00", ["dead.png"])  # a killed run's file: vacuumed too
    before, quarantine = read_scores(out), read_quarantine(out)
    table = open_table(f"{out}/scores")
    assert len(table.file_uris()) == 4

    done = {d.table: d for d in compact(out)}
    assert (done["scores"].files_before, done["scores"].files_after) == (4, 2)  # one per batch_date
    assert sorted_frame(read_scores(out)).equals(sorted_frame(before))
    removed = {d.table: d.removed for d in vacuum(out, retention_hours=0)}
    assert removed["scores"] == 5 and len(list((tmp_path / "out" / "scores").rglob("*.parquet"))) == 2
    after = read_scores(out)
    assert sorted_frame(after).equals(sorted_frame(before)) and after.attrs == before.attrs
    assert read_quarantine(out).sort_values("image_index").reset_index(drop=True).equals(
        quarantine.sort_values("image_index").reset_index(drop=True))
    assert len(committed_runs(out)) == 4 and scored_index(out, "m1") == set(before["image_index"])


def test_vacuum_keeps_replaced_files_younger_than_the_retention(tmp_path):
    out = str(tmp_path / "out")
    nights(out, 2)
    compact(out)
    assert {d.table: d.removed for d in vacuum(out)}["scores"] == 0  # the default: Delta's 7 days


def test_maintenance_waits_for_no_scoring_run(tmp_path):
    out = str(tmp_path / "out")
    with acquire_lease(f"{out}/_lock.json", ttl_s=60, about={"run_id": "nightly-1"}):
        with pytest.raises(LeaseBusy, match="nightly-1"):
            with maintenance_lease(out):
                pass


def test_migrate_moves_old_layout_runs_into_the_tables(tmp_path, capsys):
    """`jobs/maintain_scores.py --out OUT --migrate`, as the README writes it, then `migrate` again."""
    from jobs.maintain_scores import main

    out = tmp_path / "out"
    for run_id, names in (("20240401T000000Z-0aaaaa", ["a.png", "b.png"]), ("20240402T000000Z-0bbbbb", ["c.png"])):
        old = block(names, [True] * len(names), run_id=run_id, batch_date="2024-04-01").select(SCHEMA.names)
        path = f"scores/batch_date=2024-04-01/run_id={run_id}/part-0.parquet"
        size = write_table_file(old.cast(SCHEMA), str(out / path))
        quarantine_path = f"quarantine/batch_date=2024-04-01/run_id={run_id}/part-0.parquet"
        quarantine = pa.table({c: [v] for c, v in (("image_index", "q.png"), ("path", "/q.png"), ("stage", "decode"),
                                                  ("reason", "bad"), ("run_id", run_id), ("batch_date", "2024-04-01"),
                                                  ("model_id", "m1"))})
        write_table_file(quarantine, str(out / quarantine_path))
        write_scores_commit(str(out), {"run_id": run_id, "batch_date": "2024-04-01", "model_id": "m1",
                                       "tta": {"kind": "none"},
                                       "files": [{"path": path, "rows": len(names), "bytes": size}],
                                       "quarantine_files": [{"path": quarantine_path, "rows": 1, "bytes": 1}]})
    before = read_scores(str(out))
    assert main(["--out", str(out), "--migrate"]) == 0
    assert "[maintain] 2 old-layout run(s) moved into the tables" in capsys.readouterr().out
    check_writable(str(out))  # no old-layout run left
    assert not (out / "_commits").exists() or not list((out / "_commits").iterdir())
    after = read_scores(str(out))
    assert sorted_frame(after).equals(sorted_frame(before)) and after.attrs["tta"] == {"kind": "none"}
    assert len(read_quarantine(str(out))) == 2 and migrate(str(out)) == []


def test_the_readmes_weekly_command_compacts_and_keeps_every_row(tmp_path, capsys):
    """`python jobs/maintain_scores.py --out OUT --optimize --vacuum-hours 168`, as the README writes it."""
    from jobs.maintain_scores import main

    out = str(tmp_path / "out")
    nights(out)
    before = read_scores(out)
    assert main(["--out", out, "--optimize", "--vacuum-hours", "168"]) == 0
    printed = capsys.readouterr().out
    assert "scores: 4 file(s) compacted into 2" in printed and "no longer in the table deleted" in printed
    assert sorted_frame(read_scores(out)).equals(sorted_frame(before))


def test_the_job_vacuums_with_the_tables_its_compaction_left(tmp_path, capsys):
    """The job opens OUT's tables once and vacuums the objects it compacted: were their snapshot the one from
    before the compaction, a vacuum of 0 hours would delete the new files (not in that snapshot) and keep the
    replaced ones."""
    from jobs.maintain_scores import main

    out = str(tmp_path / "out")
    nights(out)
    before = read_scores(out)
    assert main(["--out", out, "--optimize", "--vacuum-hours", "0"]) == 0
    assert "scores: 4 file(s) no longer in the table deleted" in capsys.readouterr().out
    assert len(list((tmp_path / "out" / "scores").rglob("*.parquet"))) == 2
    assert sorted_frame(read_scores(out)).equals(sorted_frame(before))


def test_the_command_refuses_a_missing_output_and_one_without_tables(tmp_path):
    from jobs.maintain_scores import main

    with pytest.raises(FileNotFoundError, match="--out .*nowhere: not found"):
        main(["--out", str(tmp_path / "nowhere"), "--optimize"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no scores or quarantine table there"):
        main(["--out", str(tmp_path / "empty"), "--optimize"])
