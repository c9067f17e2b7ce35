"""Ctrl-C and SIGTERM on the jobs that write shared outputs, as a user or a scheduler sends them: the job
stops its workers, leaves committed data as it was, removes what it staged, says so in one line and exits
130 (SIGINT) or 143 (SIGTERM). The generator's own test is in tests/jobs/test_data_jobs.py."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import make_checkpoint

pytestmark = pytest.mark.slow  # each test runs a job in a subprocess and interrupts it

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def interrupt_when(command: list[str], ready, signum: int, timeout: float = 300) -> tuple[int, str]:
    """Starts a job, sends `signum` once `ready()` holds, returns (exit code, stderr)."""
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen([sys.executable, *command], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"the job ended before it could be interrupted:\n{process.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "the job never reached the point to interrupt"
        time.sleep(0.2)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def interrupted_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("interrupted (")]


def test_ctrl_c_on_prepare_overwrite_keeps_the_committed_version_and_removes_the_new_one(ray_local, learnable_images,
                                                                                       tmp_path):
    from thorax_ray.data.pipeline import ImageConfig
    from thorax_ray.data.prepare import PrepareConfig, prepare

    out = tmp_path / "prepared"
    first = prepare(PrepareConfig(data=str(learnable_images / "raw"), out=str(out), image=ImageConfig(size=32)))
    committed = (out / "prepared.json").read_bytes()

    def new_version_written() -> bool:  # a shard of the new version is on disk
        versions = out / "versions"
        return any(name != first.version and any((versions / name).rglob("*.parquet"))
                   for name in os.listdir(versions))

    code, stderr = interrupt_when(["jobs/prepare.py", "--data", str(learnable_images / "raw"), "--out", str(out),
                                   "--overwrite", "--size", "64", "--target-file-mb", "1"],
                                  new_version_written, signal.SIGINT)
    assert code == 130, stderr[-3000:]
    assert len(interrupted_lines(stderr)) == 1 and "nothing of this run was committed" in stderr
    assert (out / "prepared.json").read_bytes() == committed  # the committed version is untouched
    assert os.listdir(out / "versions") == [first.version] and not (out / "_lock.json").exists()


def test_sigterm_on_score_commits_nothing_removes_its_staging_and_releases_the_output(ray_local, learnable_images,
                                                                                     tmp_path):
    from thorax_ray.scoring import ScoreConfig
    from thorax_ray.scoring.output import committed_runs
    from thorax_ray.scoring.score import score

    checkpoint = tmp_path / "checkpoint"
    make_checkpoint(checkpoint, size=64)
    out = tmp_path / "scores"
    earlier = score(ScoreConfig(checkpoint=str(checkpoint), input=str(learnable_images / "prepared"), out=str(out),
                                max_images=50, method="none"))
    assert earlier.scored == 50
    lock = out / "_lock.json"
    started = {}

    def scoring() -> bool:  # the run holds the output's lease and has been going for a few seconds
        if lock.exists():
            started.setdefault("at", time.monotonic())
        return "at" in started and time.monotonic() - started["at"] > 3

    code, stderr = interrupt_when(["jobs/score.py", "--checkpoint", str(checkpoint), "--input",
                                   str(learnable_images / "raw"), "--out", str(out), "--method", "cam"],
                                  scoring, signal.SIGTERM)
    assert code == 143, stderr[-3000:]
    assert len(interrupted_lines(stderr)) == 1
    assert [r["run_id"] for r in committed_runs(str(out))] == [earlier.run_id]  # nothing new committed
    assert [p.name for p in (out / "scores").glob("batch_date=*/run_id=*")] == [f"run_id={earlier.run_id}"]
    assert not lock.exists()  # the next scheduled run is not blocked
    again = score(ScoreConfig(checkpoint=str(checkpoint), input=str(learnable_images / "prepared"), out=str(out),
                              max_images=10, method="none"))
    assert again.scored == 10 and again.skipped == 50


def test_score_killed_between_writing_and_committing_is_seen_by_no_reader(ray_local, ray_job_env, learnable_images,
                                                                          tmp_path):
    """SIGKILL (no clean-up at all) right before the commit, after every score file was written: DuckDB's
    delta_scan over the output sees exactly the rows read_scores returns, the earlier run's."""
    from tests.scoring.test_scores_table import KEY, delta_extension_connection, rows
    from thorax_ray.scoring import ScoreConfig, read_scores
    from thorax_ray.scoring.score import score

    checkpoint = tmp_path / "checkpoint"
    make_checkpoint(checkpoint, size=64)
    out = tmp_path / "scores"
    earlier = score(ScoreConfig(checkpoint=str(checkpoint), input=str(learnable_images / "prepared"), out=str(out),
                                max_images=20, method="none"))
    program = ("import os, runpy, signal, sys\n"
               "from thorax_ray.lease import Lease\n"
               "Lease.fence = lambda self: os.kill(os.getpid(), signal.SIGKILL)  # the step before the commit\n"
               "sys.argv = ['jobs/score.py', *sys.argv[1:]]\n"
               "runpy.run_path('jobs/score.py', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", program, "--checkpoint", str(checkpoint), "--input",
                             str(learnable_images / "prepared"), "--out", str(out), "--method", "none",
                             "--max-images", "30"], cwd=REPO, env={**os.environ, "PYTHONPATH": REPO, **ray_job_env},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    folders = [p for p in (out / "scores").glob("batch_date=*/run_id=*") if p.name != f"run_id={earlier.run_id}"]
    assert len(folders) == 1 and list(folders[0].glob("*.parquet"))  # written, never committed
    expected = rows(read_scores(str(out)))
    assert len(expected) == 20 and {r[2] for r in expected} == {earlier.run_id}
    connection = delta_extension_connection()  # kept: a connection collected mid-query closes it
    scanned = connection.sql(f"SELECT {', '.join(KEY)} FROM delta_scan('{out}/scores')").df()
    assert rows(scanned) == expected


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_run_main_turns_both_signals_into_one_line_and_the_shells_exit_code(signum, code):
    program = ("import os, signal, time\n"
               "from thorax_ray.cli import run_main\n"
               "def main(argv):\n"
               "    os.kill(os.getpid(), signal.%s)\n"
               "    time.sleep(30)\n"
               "    return 0\n"
               "run_main(main)\n" % signal.Signals(signum).name)
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == code
    assert result.stderr.strip().splitlines() == [
        f"interrupted ({signal.Signals(signum).name}): nothing of this run was committed and what it had staged "
        "was removed; committed outputs are as they were"]
