"""The data jobs as a user runs them (subprocesses, real command lines)."""
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import psutil
import pytest

pytestmark = pytest.mark.slow  # each test runs a job in a subprocess

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
    # 40 images of 12 patients: the default 10% leaves validation without a patient, which is an error
    refused = run_job("jobs/manifest.py", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "m.parquet"),
                      check=False)
    assert refused.returncode == 2 and "the val split has no patients" in refused.stderr
    assert not (tmp_path / "m.parquet").exists()
    result = run_job("jobs/manifest.py", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "m.parquet"),
                     "--val-fraction", "0.3")
    assert "rows             40" in result.stdout and "missing images   0" in result.stdout
    assert "official lists" in result.stdout and "pleural_thickening" in result.stdout
    assert len(pd.read_parquet(tmp_path / "m.parquet")) == 40


def test_manifest_job_bad_input_is_one_clear_line(tmp_path):
    (tmp_path / "Data_Entry_2017.csv").write_text("Image Index,Finding Labels\nx.png,Mass\n")
    result = run_job("jobs/manifest.py", "--data", str(tmp_path), "--out", str(tmp_path / "m.parquet"), check=False)
    assert result.returncode == 2
    assert "error:" in result.stderr and "Data_Entry_2017.csv, row 1: unrecognised header" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_make_synthetic_interrupted_stops_its_workers_and_leaves_nothing(tmp_path, signum, code):
    """Before: Ctrl-C left the pool rendering every image into --out, and SIGTERM left the CSVs of a
    dataset that later runs took for a finished one."""
    process = subprocess.Popen([sys.executable, "jobs/make_synthetic.py", "--out", str(tmp_path / "d"), "--images",
                                "3000", "--size", "128", "--workers", "2"], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any(name.endswith(".png") for _, _, names in os.walk(tmp_path) for name in names):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    # the pool's workers (children of multiprocessing's forkserver) and its helpers (the forkserver and the
    # resource tracker, children of the job itself)
    children = psutil.Process(process.pid).children(recursive=True)
    workers = [p for p in children if p.ppid() != process.pid]
    helpers = [p for p in children if p.ppid() == process.pid]
    assert workers and helpers
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert stderr.strip().splitlines() == [stderr.strip()] and "interrupted" in stderr and "removed" in stderr
    assert os.listdir(tmp_path) == []  # neither --out nor a staging folder
    assert not [p for p in workers if running(p)]  # terminated and joined before the job exits
    # the helpers leave on their own once they read EOF from the job's pipes: a moment later under load
    _, alive = psutil.wait_procs(helpers, timeout=15)
    assert not [p for p in alive if running(p)]


def running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
