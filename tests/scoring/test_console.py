"""The score job's console as a user sees it on a 2-CPU machine: its own private Ray sized from the machine's
cores, and not one line that Ray wrote (the C++ core worker's actor-restart warning, the raylet's "N PYTHON
worker processes have been started", Ray Data's "does not have any available CPUs" or its stack traces, Python
warnings from Ray's modules). Each line the job prints is of a kind listed here; a new kind of line is added
to the list on purpose, not by accident."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests import fault_fixtures
from tests.data.prepared import prepare_here
from tests.helpers import env_without_session_ray, lines_not_ours, make_checkpoint
from tests.s3_fault_proxy import SLOWDOWN
from thorax_ray import storage

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 64

fault_proxy = fault_fixtures.fault_proxy  # fixture

OUR_LINES = (
    re.compile(r"^\[score\] "),  # the stage's placement and progress lines
    re.compile(r"^(prepared input|scoring \S+|run) "),  # what the job resolved, the summary's head
    re.compile(r"^[a-z][a-z ()]{15} \S"),  # the summary's table: a 17-character label, then its value
    re.compile(r"^elapsed \d"),  # the summary's last line
    re.compile(r"^the checkpoint has no operating points; "),  # the box gate's fallback, said once
)


def ray_lines(output: str) -> list[str]:
    """The lines of `output` that are not of a kind the job prints."""
    return lines_not_ours(output, OUR_LINES)


def test_ray_lines_are_told_apart_from_the_jobs_own():
    seen = [
        "[2026-12-04 22:15:13,264 E 5374 5374] core_worker.cc:2465: Actor with class name: 'MapWorker' ...",
        "(raylet) WARNING: 8 PYTHON worker processes have been started on node: 45e0 with address: 192.0.2.2",
        "2026-12-05 10:27:47,607\tWARNING authentication_token_setup.py:85 -- Token authentication is enabled",
        "/work/main/thorax_ray/scoring/pipeline.py:88: RayDeprecationWarning: `ray_remote_args` is deprecated",
        "Full stack trace:",
        "The Ray cluster currently does not have any available CPUs. The Dataset job will hang unless more CPUs",
    ]
    ours = ["[score] 960/6,000 images (16%), 39 images/s, 25 s", "elapsed 64.1 s, 93.7 images/s end to end",
            "scored           6000 (metadata: csv 6000)", "run 20261205T102507Z-5ad401 (batch_date 2026-12-05)"]
    assert ray_lines("\n".join(seen)) == seen and ray_lines("\n".join(ours)) == []


@pytest.mark.slow
def test_score_job_on_two_cpus_prints_no_ray_line(synthetic_small, tmp_path):
    """The job as a user runs it (no --address: its own Ray on this machine's cores), on prepared shards (Ray
    Data's Parquet readers, the fused decode step, the actor pool and the datasink all run)."""
    prepare_here(str(synthetic_small), str(tmp_path / "prepared"), size=SIZE)
    make_checkpoint(tmp_path / "ckpt", "small_cnn", size=SIZE)
    result = subprocess.run(
        [sys.executable, "jobs/score.py", "--checkpoint", str(tmp_path / "ckpt"), "--input", str(tmp_path / "prepared"),
         "--out", str(tmp_path / "out"), "--batch-size", "16"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env_without_session_ray())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "scored           120" in result.stdout
    assert ray_lines(result.stdout + result.stderr) == [], result.stdout + result.stderr


@pytest.mark.slow
def test_score_job_whose_writes_fail_for_good_ends_with_one_line(ray_job_env, synthetic_small, s3_bucket, fault_proxy,
                                                                  tmp_path):
    """Every PUT of a score file answered 503 SlowDown: the write tasks fail after the retry budget, Ray Data
    gives up, and the job ends with its one `error: storage: ...` line and exit 75; Ray Data's error report and
    "Full stack trace" go to its log file, not the console."""
    make_checkpoint(tmp_path / "ckpt", "small_cnn", size=SIZE)
    proxy = fault_proxy(always={"PutObject": SLOWDOWN, "UploadPart": SLOWDOWN}, always_on=(".parquet",))
    env = {**os.environ, **ray_job_env, storage.S3_ATTEMPTS_ENV: "2"}
    result = subprocess.run(
        [sys.executable, "jobs/score.py", "--checkpoint", str(tmp_path / "ckpt"), "--input", str(synthetic_small),
         "--out", f"{s3_bucket}/scores", "--batch-size", "32", "--s3-endpoint", proxy.endpoint],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    output = result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 75 and len(errors) == 1 and errors[0].startswith("error: storage: "), output
    assert " failed after " in errors[0] and "SlowDown" in errors[0], errors
    assert "Full stack trace" not in output and "Traceback" not in output, output
    assert ray_lines(output) == errors, output
