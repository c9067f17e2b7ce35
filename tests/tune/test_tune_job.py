"""jobs/tune.py as a user runs it (subprocesses that join the session's Ray, as `ray job submit` jobs join
their cluster): the shipped smoke space end to end with ASHA, its results and best config written to S3 and
that config trained by jobs/train.py, and an interrupted sweep restored without rerunning its finished trials.
(One interrupted-and-resumed sweep covering both was tried: ASHA's decisions after a restore vary run to run,
so its early-stopping checks flaked; the two stay apart.)"""
import glob
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from tests.helpers import env_without_session_ray, lines_not_ours
from thorax_ray import storage

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
TUNE_LINES = (  # every kind of line the tune job prints
    re.compile(r"^\[tune\] "),  # what runs, one line per trial epoch and end, the summary
    re.compile(r"^rank  trial "),  # the top trials' table: its header
    re.compile(r"^ +\d+  \S+ +[A-Z]+ "),  # and its rows
)


def job(*args, env: dict[str, str], timeout=600):
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    return result


def test_smoke_space_end_to_end_asha_stops_trials_and_best_config_trains(metadata_only, tmp_path, s3_bucket,
                                                                         ray_job_env):
    """Results and the best config written to S3 (--out s3://, moto's server), that config trained from S3.
    The sweep runs as a user runs it on this machine (its own private Ray on the machine's cores: trials one at a
    time on 2 cores), and not one line of its console is Ray's (the raylet's "N PYTHON worker processes" warning
    came when two trials, each ~8 Ray processes, ran at once on 2 cores)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **ray_job_env}  # with the S3 server's variables
    out = f"{s3_bucket}/tune-out"
    started = time.monotonic()
    result = job("jobs/tune.py", "--space", "tune_spaces/smoke.yaml", "--data", str(metadata_only),
                 "--storage", str(tmp_path / "tune"), "--out", out, "--trials", "4",
                 env=env_without_session_ray(PYTHONUNBUFFERED="1"))
    tune_seconds = time.monotonic() - started
    assert lines_not_ours(result.stdout + result.stderr, TUNE_LINES) == [], result.stdout + result.stderr
    assert f"up to {max(1, (os.cpu_count() or 1) // 2)} at a time" in result.stdout  # cores / (1 worker + driver)
    table = pd.read_csv(io.StringIO(storage.read_text(f"{out}/results.csv")))
    assert len(table) >= 4 and set(table["status"]) == {"TERMINATED"}
    assert {"trial", "config", "best_val_mean_auroc", "epochs_run", "stopped_early", "wall_time_s",
            "auroc_Cardiomegaly", "auroc_Hernia"} <= set(table.columns)
    max_epochs = int(table["max_epochs"].iloc[0])
    assert max_epochs == 3
    early = table[table["stopped_early"]]
    assert len(early) >= 1 and (early["epochs_run"] < max_epochs).all(), table[["trial", "epochs_run"]]
    assert (table["epochs_run"] == max_epochs).any()  # the best trial ran to the end
    assert table["best_val_mean_auroc"].iloc[0] == table["best_val_mean_auroc"].max() > 0.55
    configs = [json.loads(c) for c in table["config"]]
    assert {c["optim.lr"] for c in configs} == {3e-3, 1e-5}  # the grid
    assert "top trials by val_mean_auroc" in result.stdout and table["trial"].iloc[0] in result.stdout
    assert "Trial status" not in result.stdout and "Configuration for experiment" not in result.stdout  # --verbose only
    assert "\x1b[" not in result.stdout
    assert result.stdout.count(" finished (") == len(table)  # one line per trial end
    print(f"smoke tune: {len(table)} trials, {len(early)} stopped early, best "
          f"{table['best_val_mean_auroc'].iloc[0]:.4f}, {tune_seconds:.0f}s")

    best = f"{out}/best_config.yaml"
    exported = yaml.safe_load(storage.read_text(best))
    assert exported["run"]["name"] is None and exported["data"]["data"] == str(metadata_only)
    assert exported["optim"]["lr"] == configs[0]["optim.lr"] and exported["loss"]["kind"] == configs[0]["loss.kind"]
    trained = job("jobs/train.py", "--config", best, "--storage", str(tmp_path / "runs"), env=env)
    assert "[train] done" in trained.stdout
    # the console is for people: one line per epoch, the summary last, no Ray output (progress bars,
    # per-rank report lines, colour codes) unless --verbose
    output = trained.stdout + trained.stderr
    epoch_lines = [line for line in output.splitlines() if " epoch " in line and "train_loss" in line]
    assert [line.split(" epoch ")[1].split()[0] for line in epoch_lines] == [f"{e}/{max_epochs}" for e in
                                                                             range(1, max_epochs + 1)]
    assert "\x1b[" not in output and "TrainingReport" not in output and len(output.splitlines()) <= 12, output
    assert trained.stdout.strip().splitlines()[-2].startswith("[train] done")
    metrics = json.loads((tmp_path / "runs" / "thorax-mlp" / "metrics.json").read_text())
    assert metrics["epochs_run"] == max_epochs and metrics["config"]["optim"]["lr"] == exported["optim"]["lr"]
    assert metrics["val"]["mean_auroc"] > 0.55


def finished_trials(runs: str) -> dict[str, int]:
    """trial id -> number of finished executions recorded by the trainable."""
    done = {}
    for path in glob.glob(os.path.join(runs, "*", "tune_executions", "*.json")):
        try:
            record = json.loads(open(path).read())
        except (OSError, ValueError):
            continue
        if record.get("finished"):
            done[record["trial_id"]] = done.get(record["trial_id"], 0) + 1
    return done


def completed_by_tune(log_path) -> set[str]:
    """Trial ids whose completion the sweep's driver has processed (its on_trial_complete line)."""
    return set(re.findall(r"^\[tune\] (\S+) finished \(", log_path.read_text(), flags=re.MULTILINE))


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(metadata_only, tmp_path, ray_job_env):
    env = {**ENV, **ray_job_env}
    command = [sys.executable, "jobs/tune.py", "--space", "tune_spaces/smoke.yaml", "--data", str(metadata_only),
               "--storage", str(tmp_path / "tune"), "--out", str(tmp_path / "out"), "--name", "resumable",
               "--trials", "2", "--epochs", "2", "--max-concurrent", "1"]
    runs = str(tmp_path / "tune" / "resumable" / "runs")
    log = open(tmp_path / "first.log", "w")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # finished as Tune sees it (the driver's "[tune] <id> finished" line), not only as the trainable
        # recorded it: Ctrl-C between the two leaves the trial unfinished in Tune's state, to run again
        deadline = time.monotonic() + 400
        while not completed_by_tune(tmp_path / "first.log") and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
        before = completed_by_tune(tmp_path / "first.log")
        assert before, "no trial finished before the deadline: " + open(tmp_path / "first.log").read()[-3000:]
        process.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves the experiment state and stops
        first_rc = process.wait(timeout=180)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
    first_log = open(tmp_path / "first.log").read()
    assert first_rc in (130, 0), first_log[-3000:]
    finished_before = set(before)

    second = job(*command[1:], env=env)
    assert "resuming experiment" in second.stdout
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(table) == 2 and set(table["status"]) == {"TERMINATED"}, table
    executions = dict(zip(table["trial"], table["executions"]))
    for trial in finished_before:  # trials Tune saw end (at their last epoch, or stopped by ASHA) were not run again
        assert executions[trial] == 1 and finished_trials(runs).get(trial, 0) <= 1
    after = finished_trials(runs)
    for _, row in table.iterrows():  # the rest ran to their end (or until ASHA stopped them)
        assert row["max_epochs"] == 2 and 1 <= row["epochs_run"] <= 2
        assert bool(row["stopped_early"]) == (row["epochs_run"] < 2)  # ended before --epochs only if ASHA stopped it
        assert after.get(row["trial"]) == 1 or row["stopped_early"]
    if first_rc == 130:
        assert "interrupted: run the same command again" in first_log
