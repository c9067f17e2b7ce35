"""Monitoring per night: runs of a night combined, the table, the plot, and `jobs/monitor.py`."""
import numpy as np
import pytest
from PIL import Image

from jobs.monitor import main
from tests.monitoring.records import reference, score_rows
from thorax_ray.labels import FINDINGS
from thorax_ray.monitoring.drift import bin_counts, population_stability_index
from thorax_ray.monitoring.report import format_table, nights, plot_nights
from thorax_ray.monitoring.run import monitor_batch, monitor_committed_run

MODEL = "0123456789abcdef"


def batch(n, *, shift=0.0, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(rng.beta(1, 6, size=(n, len(FINDINGS))) + shift, 0, 1)


def record(run_id, batch_date, probabilities, ood, stored, *, model_id=MODEL, sources=None):
    return {"run_id": run_id, "batch_date": batch_date, "model_id": model_id, "model_name": "small_cnn",
            **monitor_batch(probabilities, ood, sources or ["csv"] * len(probabilities), stored)}


def test_a_nights_psi_comes_from_its_runs_counts_summed_and_its_ood_share_from_their_sums():
    stored = reference()
    a, b = batch(60, seed=1), batch(90, shift=0.2, seed=2)
    records = [record("r1", "2024-01-01", a, np.r_[np.full(3, 99.0), np.zeros(57)], stored),
               record("r2", "2024-01-01", b, np.r_[np.full(9, 99.0), np.zeros(81)], stored, sources=["dicom"] * 90),
               record("r3", "2024-01-02", a, np.zeros(60), stored)]
    first, second = nights(records)
    assert (first.batch_date, first.runs, first.images, second.runs) == ("2024-01-01", 2, 150, 1)
    edges = stored["probabilities"]["edges"][0]
    both = np.r_[a[:, 0], b[:, 0]]
    expected = population_stability_index(bin_counts(both, edges), stored["probabilities"]["counts"][0])
    assert first.psi["Atelectasis"] == pytest.approx(expected)
    assert first.ood_share == pytest.approx(12 / 150) and first.ood_alarm
    assert first.drifted == set(records[1]["drifted"]) and first.sources == {"csv": 60, "dicom": 90}
    assert not second.drifted and not second.ood_alarm


def test_the_table_has_a_line_per_night_and_a_block_per_model():
    stored = reference()
    rows = nights([record("r1", "2024-01-01", batch(60), np.zeros(60), stored),
                   record("r2", "2024-01-02", batch(60, shift=0.3), np.full(60, 99.0), stored),
                   record("r3", "2024-01-02", batch(30), None, None, model_id="f" * 16)])
    table = format_table(rows).splitlines()
    assert table[0].startswith(f"model small_cnn (model_id {MODEL})")
    assert table[2].startswith("2024-01-01     1       60       0.0%") and table[2].rstrip().endswith("csv 60")
    assert table[3].startswith("2024-01-02     1       60   100.0% !") and " all 14 " in table[3]
    assert table[5].startswith(f"model small_cnn (model_id {'f' * 16})")
    assert table[7].startswith("2024-01-02     1       30        n/a  n/a") and "no reference" in table[7]
    assert format_table([]) == "no monitoring records"


def test_the_plot_is_a_png_of_psi_and_ood_share_over_nights(tmp_path):
    stored = reference()
    rows = nights([record(f"r{day}", f"2024-01-0{day}", batch(60, shift=0.05 * day, seed=day), np.zeros(60), stored)
                   for day in range(1, 6)])
    path = plot_nights(rows, str(tmp_path / "nights.png"))
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 600 and image.size[1] > 400


def test_the_command_prints_the_table_and_writes_the_plot_beside_the_records(tmp_path, capsys):
    out, stored = str(tmp_path / "scores"), reference()
    for day, shift in ((1, 0.0), (2, 0.0), (3, 0.3)):
        run_id = f"2024010{day}T000000Z-0{day}"
        rows = score_rows(batch(80, shift=shift, seed=day), np.zeros(80), ["csv"] * 80)
        monitor_committed_run(out, rows, run_id=run_id, batch_date=f"2024-01-0{day}", model_id=MODEL,
                              model_name="small_cnn", reference=stored)
    assert main([out]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line[:10] for line in printed[2:5]] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert printed[2].split()[6] == "-" and " all 14 " in printed[4]  # the shifted night drifted
    assert printed[-1] == f"[monitor] plot {out}/monitoring/nights-{MODEL}.png"
    assert (tmp_path / "scores" / "monitoring" / f"nights-{MODEL}.png").stat().st_size > 10_000


def test_the_command_refuses_a_missing_output(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: not found"):
        main([str(tmp_path / "nowhere")])
