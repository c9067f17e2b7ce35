"""The data jobs as a user runs them (subprocesses, real command lines)."""
import os
import subprocess
import sys

import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_job(*args, check=True):
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ})
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_make_synthetic_and_manifest_jobs(tmp_path):
    run_job("jobs/make_synthetic.py", "--out", str(tmp_path / "d"), "--images", "40", "--size", "64",
            "--preview", str(tmp_path / "sheet.png"))
    assert (tmp_path / "sheet.png").stat().st_size > 10_000
    result = run_job("jobs/manifest.py", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "m.parquet"))
    assert "rows             40" in result.stdout and "missing images   0" in result.stdout
    assert "official lists" in result.stdout and "pleural_thickening" in result.stdout
    assert len(pd.read_parquet(tmp_path / "m.parquet")) == 40


def test_manifest_job_bad_input_is_one_clear_line(tmp_path):
    (tmp_path / "Data_Entry_2017.csv").write_text("Image Index,Finding Labels\nx.png,Mass\n")
    result = run_job("jobs/manifest.py", "--data", str(tmp_path), "--out", str(tmp_path / "m.parquet"), check=False)
    assert result.returncode == 2
    assert "error:" in result.stderr and "Data_Entry_2017.csv, row 1: unrecognised header" in result.stderr
    assert "Traceback" not in result.stderr
