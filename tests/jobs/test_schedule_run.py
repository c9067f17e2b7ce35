"""The nightly scoring run exactly as the head's systemd timer runs it: cluster.yaml's schedule command installs
the units on a stand-in head (tests/test_schedule.py), the package wheel is built and installed into that head's
~/thorax (so the script and jobs/score.py are the installed copies), and README's commands then run the service's
ExecStart as the cluster user with systemd's environment against a local Ray head with token authentication and
its dashboard on 127.0.0.1. Replaced, because they cannot exist here: the Jobs API's port (RAY_ADDRESS) and the
bucket (a moto S3 server's). The scores must be committed, the log written under the user's ~/thorax-logs, and
a failing job must fail the service."""
from __future__ import annotations

import io
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import env_without_session_ray, make_checkpoint, upload_tree
from tests.jobs.test_submit import VENV_BIN, free_ports, node_ports, stop_cluster
from tests.test_schedule import (UNIT, VENV, build_wheel, install_schedule, install_wheel, on_head,
                                 readme_schedule_commands, run_on_head)

pytestmark = pytest.mark.slow
BUCKET = "s3://thorax-ray-data"  # cluster.yaml's (EDIT) bucket
IMAGES = 6


@dataclass
class RayHead:
    dashboard: str
    token: str
    process: subprocess.Popen


@pytest.fixture(scope="module")
def ray_head(s3_server):
    """`ray start --head` with token authentication and the dashboard on 127.0.0.1 (started after the S3 server,
    so its jobs see the AWS variables as a real head's jobs see its instance role). Yields at once: the head is
    prepared while Ray starts (`installed_head`), and each test waits for the Jobs API (`wait_for_jobs_api`)."""
    gcs, dashboard = free_ports(2)
    token = secrets.token_hex(32)
    env = env_without_session_ray()
    env.update(PATH=VENV_BIN + os.pathsep + env["PATH"], RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    temp_dir = tempfile.mkdtemp(prefix="rays-", dir="/tmp")  # its own: see tests/jobs/test_submit.py
    process = subprocess.Popen([os.path.join(VENV_BIN, "ray"), "start", "--head", "--block", f"--port={gcs}",
                                f"--temp-dir={temp_dir}", "--num-cpus=3", "--include-dashboard=true",
                                "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                                "--disable-usage-stats", *node_ports()],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield RayHead(f"http://127.0.0.1:{dashboard}", token, process)
    finally:
        stop_cluster(process, gcs)
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for_jobs_api(head: RayHead) -> None:
    """Until a job submitted with the token runs (the dashboard agent answers some seconds after the start)."""
    env = env_without_session_ray()
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head.token)
    deadline = time.monotonic() + 180
    while True:
        done = subprocess.run([os.path.join(VENV_BIN, "ray"), "job", "submit", "--address", head.dashboard, "--",
                               "true"], env=env, capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            return
        assert time.monotonic() < deadline and head.process.poll() is None, (done.stdout + done.stderr)[-2000:]
        time.sleep(1)


@pytest.fixture(scope="module")
def installed_head(ray_head, tmp_path_factory):
    """The head as `ray up` leaves it: the units of cluster.yaml's schedule command, the wheel installed into
    ~/thorax (its setup commands), the cluster token at ~/.ray/auth_token (its file_mounts). Returns the
    stand-in and the service's text as installed."""
    head = install_schedule(tmp_path_factory.mktemp("head"))  # `ray up`: README's first command
    install_wheel(build_wheel(tmp_path_factory.mktemp("wheel")), head.home / VENV)
    (head.home / ".ray").mkdir()
    (head.home / ".ray" / "auth_token").write_text(ray_head.token)
    return head, (head.units / f"{UNIT}.service").read_text()


def with_bucket(installed_head, bucket: str):
    """The installed unit with only the bucket replaced (the head's unit names the real one); its flags."""
    head, service = installed_head
    assert f"{BUCKET}/" in service
    (head.units / f"{UNIT}.service").write_text(service.replace(f"{BUCKET}/", f"{bucket}/"))
    argv = head.exec_start()
    return head, dict(zip(argv[2::2], argv[3::2]))


def upload_new_images(prefix: str) -> list[str]:
    """A night's new images: PNGs without a CSV, named as NIH names them."""
    import s3fs

    fs = s3fs.S3FileSystem()
    names = [f"0000{index:04d}_000.png" for index in range(IMAGES)]
    rng = np.random.default_rng(0)
    for name in names:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(buffer, format="PNG")
        fs.pipe(f"{prefix.removeprefix('s3://').rstrip('/')}/{name}", buffer.getvalue())
    return names


def run_log(output: str) -> Path:
    """The log file the script names in its last line."""
    return Path(re.search(r"log: (\S+)", output).group(1))


def test_the_timers_command_scores_the_new_images_and_logs_in_home(ray_head, installed_head, s3_bucket, tmp_path):
    from thorax_ray.scoring import read_scores

    head, flags = with_bucket(installed_head, s3_bucket)
    make_checkpoint(tmp_path / "checkpoint", "small_cnn", size=64)
    upload_tree(tmp_path / "checkpoint", flags["--checkpoint"])
    names = upload_new_images(flags["--input"])
    run_now, latest_log = (on_head(c) for c in readme_schedule_commands()[1:])
    wait_for_jobs_api(ray_head)

    done = run_on_head(head, run_now, RAY_ADDRESS=ray_head.dashboard)
    assert done.returncode == 0, done.stdout + done.stderr
    log = run_log(done.stdout)
    assert log.parent == head.home / "thorax-logs" and "succeeded" in done.stdout
    text = log.read_text()
    assert f"Job '{log.name.removesuffix('.log')}' succeeded" in text and f"scored           {IMAGES}" in text, text
    assert sorted(read_scores(flags["--out"])["image_index"]) == names  # committed, each image once

    shown = run_on_head(head, latest_log)
    assert shown.returncode == 0 and f"Job '{log.name.removesuffix('.log')}' succeeded" in shown.stdout, shown


def test_the_timers_command_fails_when_the_job_fails(ray_head, installed_head, s3_bucket):
    """An empty bucket: the job stops at once (no checkpoint), and so does the service, naming its log."""
    head, flags = with_bucket(installed_head, s3_bucket)
    run_now = on_head(readme_schedule_commands()[1])
    wait_for_jobs_api(ray_head)
    failed = run_on_head(head, run_now, RAY_ADDRESS=ray_head.dashboard)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    log = run_log(failed.stderr)
    text = log.read_text()
    assert f"Job '{log.name.removesuffix('.log')}' failed" in text and flags["--checkpoint"] in text, text
