"""The nightly scoring schedule, as `ray up cluster.yaml` installs it on the head (README, "On a schedule"):
the schedule command of cluster.yaml's `head_setup_commands` run twice on a stand-in head (its own HOME, the
unit folder in a temporary directory, `sudo` and `systemctl` stubbed), the units it writes checked by
`systemd-analyze verify`, the wheel checked to install the scheduled script beside the jobs it submits, the
script's exit status and log checked with a stub `ray`, the Kubernetes manifest of docs/kubernetes/ checked to
run the same entrypoint, and README's commands checked to be the ones these tests run.
tests/jobs/test_schedule_run.py runs the installed command end to end against a token-auth Ray head."""
from __future__ import annotations

import getpass
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER_YAML = REPO / "cluster.yaml"
SCRIPT = REPO / "deploy" / "nightly-score.sh"
MANIFEST = REPO / "docs" / "kubernetes" / "nightly-scoring.yaml"
UNIT = "thorax-nightly-score"
SHARE = "share/thorax-ray"  # the wheel's data files, under the venv's prefix (pyproject.toml)
VENV = "thorax"  # the head's venv: ~/thorax (cluster.yaml's setup_commands)
ENTRYPOINT = "python jobs/score.py"  # what the script submits, run in SHARE (its --working-dir)
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # a system service's PATH


@dataclass
class Head:
    """A stand-in for the head: HOME of the cluster user, the systemd unit folder, what systemctl was asked."""
    home: Path
    units: Path
    systemctl_log: Path

    def unit(self, suffix: str) -> dict[str, dict[str, str]]:
        return read_unit(self.units / f"{UNIT}.{suffix}")

    def exec_start(self) -> list[str]:
        return shlex.split(self.unit("service")["Service"]["ExecStart"])

    def env(self, **extra: str) -> dict[str, str]:
        """The environment systemd gives a service with `User=` (HOME, USER, LOGNAME, SHELL, its PATH)."""
        user = getpass.getuser()
        return {"HOME": str(self.home), "USER": user, "LOGNAME": user, "SHELL": "/bin/bash", "PATH": SYSTEMD_PATH,
                **extra}


def schedule_setup_command() -> str:
    commands = [c for c in yaml.safe_load(CLUSTER_YAML.read_text())["head_setup_commands"] if UNIT in c]
    assert len(commands) == 1, f"one head setup command should install {UNIT}: {commands}"
    return commands[0]


def install_schedule(root: Path) -> Head:
    """Runs cluster.yaml's schedule command as `ray up` runs a setup command on the head (bash, as the cluster
    user, HOME its home), with what cannot exist here replaced: /etc/systemd/system is ROOT/units, `sudo` runs its
    command, `systemctl` records its arguments. Runs again on the same ROOT as a second `ray up` does."""
    head = Head(root / "home", root / "units", root / "systemctl.log")
    stubs = root / "stubs"
    for folder in (head.home, head.units, stubs):
        folder.mkdir(parents=True, exist_ok=True)
    (stubs / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    (stubs / "systemctl").write_text('#!/bin/sh\necho "$*" >> "$SYSTEMCTL_LOG"\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    command = schedule_setup_command()
    assert command.count("/etc/systemd/system/") == 2, command
    command = command.replace("/etc/systemd/system/", f"{head.units}/")
    env = {**head.env(), "PATH": f"{stubs}:{SYSTEMD_PATH}", "SYSTEMCTL_LOG": str(head.systemctl_log)}
    done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return head


def read_unit(path: Path) -> dict[str, dict[str, str]]:
    """A systemd unit file's sections and keys (each key once; continuation lines joined)."""
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in path.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert key not in current, f"{path.name}: {key} set twice"
        current[key] = value
    return sections


def build_wheel(folder: Path) -> Path:
    """The package wheel as README's runbook builds it (`pip wheel --no-deps`), from a copy of the sources it
    reads (building in the checkout would write build/ there)."""
    source = folder / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("thorax_ray", "jobs", "deploy"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(folder / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (folder / "dist").glob("thorax_ray-*.whl")
    return wheel


def install_wheel(wheel: Path, prefix: Path) -> None:
    """Installs the wheel's data files into PREFIX as an installer (pip, uv) does for cluster.yaml's
    `uv pip install` into ~/thorax: `<name>.data/data/X` becomes PREFIX/X (so PREFIX/share/thorax-ray/...);
    PREFIX/bin/ray is the test's own Ray client. The package itself is the test's (an installer run here
    would replace the checkout's editable install in the test's venv)."""
    with zipfile.ZipFile(wheel) as archive:
        data = [m for m in archive.infolist() if re.match(r"[^/]+\.data/data/", m.filename) and not m.is_dir()]
        assert data, f"{wheel.name} installs no data files"
        for member in data:
            target = prefix / member.filename.split("/", 2)[2]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(member))
            target.chmod((member.external_attr >> 16) & 0o777 or 0o644)
    (prefix / "bin").mkdir(exist_ok=True)
    os.symlink(os.path.join(os.path.dirname(sys.executable), "ray"), prefix / "bin" / "ray")


def readme_schedule_commands() -> list[str]:
    """The commands of README's "On a schedule" (its code blocks, comments removed)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = re.search(r"\*\*On a schedule\.\*\*(.*?)\n## ", text, re.S).group(1)
    commands = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", section, re.S):
        commands += [line.split("  # ")[0].strip() for line in block.splitlines() if line.strip()]
    return commands


def on_head(command: str) -> str:
    """What `ray exec cluster.yaml 'COMMAND'` runs on the head."""
    words = shlex.split(command)
    assert words[:3] == ["ray", "exec", "cluster.yaml"] and len(words) == 4, command
    return words[3]


def run_on_head(head: Head, command: str, **env: str) -> subprocess.CompletedProcess:
    """Runs a README command that runs on the head: `sudo systemctl start UNIT` as systemd starts the service
    (its ExecStart, as its User, with systemd's environment), anything else with bash as the cluster user."""
    if command == f"sudo systemctl start {UNIT}":
        argv = head.exec_start()
    else:
        argv = ["bash", "-c", command]
    return subprocess.run(argv, env=head.env(**env), capture_output=True, text=True, timeout=300)


def test_ray_up_installs_the_timer_and_again_changes_nothing(tmp_path):
    head = install_schedule(tmp_path)
    first = {path.name: path.read_text() for path in head.units.iterdir()}
    assert sorted(first) == [f"{UNIT}.service", f"{UNIT}.timer"]
    install_schedule(tmp_path)  # `ray up` again, or on a new head
    assert {path.name: path.read_text() for path in head.units.iterdir()} == first
    calls = ["daemon-reload", f"enable {UNIT}.timer", f"restart {UNIT}.timer"]
    assert head.systemctl_log.read_text().splitlines() == calls * 2  # the timer only; no run is started

    service, timer = head.unit("service"), head.unit("timer")
    assert service["Service"]["Type"] == "oneshot" and service["Service"]["User"] == getpass.getuser()
    script = head.home / VENV / SHARE / "nightly-score.sh"
    argv = head.exec_start()
    assert argv[:2] == ["/bin/bash", str(script)]  # the installed copy of deploy/nightly-score.sh
    flags = dict(zip(argv[2::2], argv[3::2]))
    assert {"--checkpoint", "--input", "--out"} <= set(flags) and all(
        flags[f].startswith("s3://") for f in ("--checkpoint", "--input", "--out")), argv  # every node reads them
    assert timer["Timer"]["Persistent"] == "true" and timer["Install"]["WantedBy"] == "timers.target"
    assert "Unit" not in timer["Timer"]  # starts the service of its own name
    if shutil.which("systemd-analyze"):
        calendar = subprocess.run(["systemd-analyze", "calendar", timer["Timer"]["OnCalendar"]],
                                  capture_output=True, text=True)
        assert calendar.returncode == 0 and "Normalized form: *-*-* 02:15:00 UTC" in calendar.stdout, calendar
        script.parent.mkdir(parents=True)
        shutil.copy(SCRIPT, script)  # verify checks that ExecStart's program exists
        verify = subprocess.run(["systemd-analyze", "verify", "--man=no", *sorted(map(str, head.units.iterdir()))],
                                capture_output=True, text=True)
        assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr


def test_the_scheduled_script_and_jobs_ship_in_the_wheel(tmp_path):
    """Code on the head: the script the service runs and the job it submits come with the installed package,
    into the venv that cluster.yaml's setup commands create."""
    setup = yaml.safe_load(CLUSTER_YAML.read_text())["setup_commands"]
    assert any(f"uv venv --python 3.11 ~/{VENV}" in c for c in setup), setup
    data_files = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    assert data_files[SHARE] == ["deploy/nightly-score.sh"] and data_files[f"{SHARE}/jobs"] == ["jobs/*.py"]
    prefix = tmp_path / VENV
    install_wheel(build_wheel(tmp_path), prefix)
    assert (prefix / SHARE / "nightly-score.sh").read_bytes() == SCRIPT.read_bytes()
    assert (prefix / SHARE / "jobs" / "score.py").read_bytes() == (REPO / "jobs" / "score.py").read_bytes()


FAKE_RAY = """#!/bin/bash
# `ray job submit` / `ray job status` of a cluster whose job ends as $FAKE_JOB (succeeded, failed, stopped)
echo "$* | RAY_AUTH_MODE=$RAY_AUTH_MODE" >> "$FAKE_RAY_CALLS"
id=$(grep -o 'nightly-score-[0-9TZ]*' <<<"$*" | head -n 1)
case "$2:$FAKE_JOB" in
  submit:failed) echo "Job '$id' failed"; exit 1 ;;
  submit:*) echo "Job '$id' $FAKE_JOB" ;;
  status:succeeded) echo "Job '$id' succeeded" ;;
  status:failed) echo "Job '$id' failed" ;;
  status:stopped) echo "Job '$id' was stopped" ;;
esac
"""


@pytest.mark.parametrize("outcome, code", [("succeeded", 0), ("failed", 1), ("stopped", 1)])
def test_the_script_exits_non_zero_unless_the_job_succeeded_and_logs_in_home(tmp_path, outcome, code):
    prefix = tmp_path / "home" / VENV
    (prefix / SHARE).mkdir(parents=True)
    (prefix / "bin").mkdir()
    shutil.copy(SCRIPT, prefix / SHARE / "nightly-score.sh")
    (prefix / "bin" / "ray").write_text(FAKE_RAY)
    (prefix / "bin" / "ray").chmod(0o755)
    logs = tmp_path / "home" / "thorax-logs"
    logs.mkdir()
    old = logs / "nightly-score-20200101T021500Z.log"
    old.write_text("a run of long ago\n")
    os.utime(old, (0, 0))
    head = Head(tmp_path / "home", tmp_path, tmp_path)
    calls = tmp_path / "calls"
    done = subprocess.run(["/bin/bash", str(prefix / SHARE / "nightly-score.sh"), "--checkpoint", "s3://b/run",
                           "--input", "s3://b/in/", "--out", "s3://b/scores"],
                          env=head.env(FAKE_JOB=outcome, FAKE_RAY_CALLS=str(calls)), capture_output=True, text=True)
    assert done.returncode == code, done.stdout + done.stderr
    (log,) = logs.iterdir()  # this run's; the 90-day-old one deleted
    submit, status = calls.read_text().splitlines()
    run_id = log.name.removesuffix(".log")
    assert submit == (f"job submit --address http://127.0.0.1:8265 --submission-id {run_id} --working-dir "
                      f"{prefix / SHARE} -- {ENTRYPOINT} --checkpoint s3://b/run --input s3://b/in/ --out s3://b/scores"
                      " | RAY_AUTH_MODE=token")
    assert status == f"job status --address http://127.0.0.1:8265 {run_id} | RAY_AUTH_MODE=token"
    assert f"log: {log}" in done.stdout + done.stderr
    assert f"submitting {run_id} to http://127.0.0.1:8265: {ENTRYPOINT} --checkpoint s3://b/run" in log.read_text()


def test_the_script_fails_at_once_when_it_cannot_write_its_log(tmp_path):
    (tmp_path / "thorax-logs").write_text("a file where the log folder should be")
    done = subprocess.run(["/bin/bash", str(SCRIPT), "--checkpoint", "x"], env=Head(tmp_path, tmp_path, tmp_path).env(),
                          capture_output=True, text=True)
    assert done.returncode == 73 and "cannot write" in done.stderr, done.stderr


def test_kubernetes_cronjob_starts_a_rayjob_with_the_same_entrypoint(tmp_path):
    """docs/kubernetes/nightly-scoring.yaml: a CronJob whose pod creates the RayJob of a ConfigMap and waits for
    it; the RayJob runs the entrypoint the head's timer submits (same flags, the installed jobs/ as its working
    directory) on a cluster of its own with token authentication, its scoring workers as cluster.yaml's."""
    documents: dict[str, list[dict]] = {}
    for document in yaml.safe_load_all(MANIFEST.read_text()):
        documents.setdefault(document["kind"], []).append(document)
    (cron,), (config_map,), (role,), (binding,) = (documents[k] for k in ("CronJob", "ConfigMap", "Role",
                                                                           "RoleBinding"))
    accounts = {a["metadata"]["name"] for a in documents["ServiceAccount"]}
    assert cron["spec"]["schedule"] == "15 2 * * *" and cron["spec"]["timeZone"] == "Etc/UTC"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (template_name,) = config_map["data"]
    rayjob = yaml.safe_load(config_map["data"][template_name])
    assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob")
    spec = rayjob["spec"]

    argv = install_schedule(tmp_path).exec_start()
    assert spec["entrypoint"] == shlex.join([*ENTRYPOINT.split(), *argv[2:]])  # the timer's flags, to the letter
    assert f'-- {ENTRYPOINT} "$@"' in SCRIPT.read_text()  # what the timer's script submits
    working_dir = yaml.safe_load(spec["runtimeEnvYAML"])["working_dir"]
    assert working_dir.endswith(f"/{SHARE}")  # the wheel's jobs/, as the script's --working-dir on the head
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0" and cluster["authOptions"] == {"mode": "token"}
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    pods = [g["template"]["spec"] for g in groups]
    assert len({c["image"] for pod in pods for c in pod["containers"]}) == 1  # the image with the wheel
    assert all(pod["serviceAccountName"] in accounts for pod in pods)
    (workers,) = cluster["workerGroupSpecs"]
    shipped = yaml.safe_load(CLUSTER_YAML.read_text())["available_node_types"]
    (scoring,) = [t["resources"] for t in shipped.values() if t["resources"].get("GPU") == 1]
    roles = {k: v for k, v in scoring.items() if k not in ("CPU", "GPU")}
    advertised = yaml.safe_load(yaml.safe_load(workers["rayStartParams"]["resources"])) \
        if "resources" in workers["rayStartParams"] else {}
    assert roles.items() <= advertised.items()  # the node roles the scoring job asks for, as on AWS
    (worker,) = workers["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == str(scoring["GPU"])

    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] in accounts
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"] and binding["roleRef"]["name"] == \
        role["metadata"]["name"]
    (container,) = pod["containers"]
    script = " ".join(container["command"] + container.get("args", []))
    assert f"kubectl create -f /templates/{template_name}" in script
    assert "exit 1" in script  # a failed RayJob fails the CronJob's Job
    assert any("rayjobs" in r["resources"] and {"create", "get"} <= set(r["verbs"]) for r in role["rules"])


def test_readme_commands_are_the_ones_tested():
    """README's "On a schedule" tells the user to run exactly these; tests/jobs/test_schedule_run.py runs the
    ones that run on the head, this file's install test what `ray up` runs."""
    commands = readme_schedule_commands()
    assert commands[0] == "ray up cluster.yaml -y"
    on_the_head = [on_head(c) for c in commands[1:]]
    assert on_the_head[0] == f"sudo systemctl start {UNIT}"
    assert all("~/thorax-logs/" in c for c in on_the_head[1:]) and len(on_the_head) == 2, on_the_head
    assert "/var/log" not in (REPO / "README.md").read_text()
