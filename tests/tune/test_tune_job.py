"""jobs/tune.py as a user runs it (subprocesses that join the session's Ray, as `ray job submit` jobs join
their cluster): the shipped smoke space end to end with ASHA, interrupted and restored without rerunning its
finished trials, its results and best config written to S3, and that config trained by jobs/train.py. One
sweep covers what two did (the suite's time)."""
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

from thorax_ray import storage

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def job(*args, env: dict[str, str], timeout=600):
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    return result


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


def interrupt_after_a_trial_finishes(command: list[str], log_path, env: dict[str, str]) -> tuple[int, str, set[str]]:
    """Runs the sweep until Tune has processed one trial's completion (the driver's "[tune] <id> finished" line,
    not only the trainable's record: Ctrl-C between the two leaves the trial unfinished in Tune's state, to
    run again), then Ctrl-C; returns (exit code, the log, the trials Tune saw finish)."""
    log = open(log_path, "w")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while not completed_by_tune(log_path) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
        assert completed_by_tune(log_path), "no trial finished before the deadline: " + log_path.read_text()[-3000:]
        process.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves the experiment state and stops
        code = process.wait(timeout=180)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
    return code, log_path.read_text(), completed_by_tune(log_path)


def test_smoke_sweep_interrupted_resumed_asha_stops_trials_and_best_config_trains(metadata_only, tmp_path, s3_bucket,
                                                                                   ray_job_env):
    """The shipped smoke space end to end: interrupted after a trial finishes, resumed by the same command
    without rerunning finished trials, ASHA stopping poor trials, results and the best config written to S3
    (--out s3://), and that config trained by jobs/train.py read from S3."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **ray_job_env}  # the S3 server's variables set by its fixture
    out = f"{s3_bucket}/tune-out"
    command = [sys.executable, "jobs/tune.py", "--space", "tune_spaces/smoke.yaml", "--data", str(metadata_only),
               "--storage", str(tmp_path / "tune"), "--out", out, "--name", "smoke", "--trials", "4"]
    first_rc, first_log, finished_first = interrupt_after_a_trial_finishes(command, tmp_path / "first.log", env)
    assert first_rc in (130, 0), first_log[-3000:]
    if first_rc == 130:
        assert "interrupted: run the same command again" in first_log
    runs_dir = str(tmp_path / "tune" / "smoke" / "runs")
    # Finished as the trainables recorded it: a trial that ended after Tune's last processed completion but
    # before Ctrl-C reached it is unfinished in Tune's state and runs again (once) when resumed.
    recorded_first = finished_trials(runs_dir)

    started = time.monotonic()
    result = job(*command[1:], env=env)
    tune_seconds = time.monotonic() - started
    assert "resuming experiment" in result.stdout
    table = pd.read_csv(io.StringIO(storage.read_text(f"{out}/results.csv")))
    assert len(table) >= 4 and set(table["status"]) == {"TERMINATED"}, table
    assert {"trial", "config", "best_val_mean_auroc", "epochs_run", "stopped_early", "wall_time_s",
            "auroc_Cardiomegaly", "auroc_Hernia"} <= set(table.columns)
    max_epochs = int(table["max_epochs"].iloc[0])
    assert max_epochs == 3
    executions = dict(zip(table["trial"], table["executions"]))
    runs = finished_trials(runs_dir)
    for trial in finished_first:  # finished trials were not run again
        assert executions[trial] == 1 and runs[trial] == 1
    for _, row in table.iterrows():  # the rest ran to their end (once, in the resumed sweep) or ASHA stopped them
        assert 1 <= row["epochs_run"] <= max_epochs
        assert bool(row["stopped_early"]) == (row["epochs_run"] < max_epochs)
        if row["trial"] not in finished_first:
            resumed_ends = runs.get(row["trial"], 0) - recorded_first.get(row["trial"], 0)
            assert resumed_ends == 1 or row["stopped_early"], (row["trial"], runs, recorded_first)
    early = table[table["stopped_early"]]
    assert len(early) >= 1 and (table["epochs_run"] == max_epochs).any(), table[["trial", "epochs_run"]]
    assert table["best_val_mean_auroc"].iloc[0] == table["best_val_mean_auroc"].max() > 0.55
    configs = [json.loads(c) for c in table["config"]]
    assert {c["optim.lr"] for c in configs} == {3e-3, 1e-5}  # the grid
    assert "top trials by val_mean_auroc" in result.stdout and table["trial"].iloc[0] in result.stdout
    assert "Trial status" not in result.stdout and "Configuration for experiment" not in result.stdout  # --verbose only
    assert "\x1b[" not in result.stdout
    assert result.stdout.count(" finished (") == len(table) - len(finished_first)  # one line per trial end
    print(f"smoke tune: {len(table)} trials, {len(early)} stopped early, best "
          f"{table['best_val_mean_auroc'].iloc[0]:.4f}, resumed run {tune_seconds:.0f}s")

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
