"""The cluster nodes' pinned environment, requirements/cluster.lock (`make lock`): it pins every dependency of
pyproject.toml (and of the extras it asks for) at a version its specifier allows, with hashes, for the nodes'
Linux x86_64 and Python 3.11 and torch's CUDA build; cluster.yaml installs exactly it, then the wheel alone."""
from __future__ import annotations

import importlib.metadata
import os
import re
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK = os.path.join(REPO, "requirements", "cluster.lock")
NODE = {"python_version": "3.11", "python_full_version": "3.11.9", "sys_platform": "linux",
        "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
        "implementation_name": "cpython", "platform_python_implementation": "CPython"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


def read_lock(path: str = LOCK) -> dict[str, tuple[Version, list[str]]]:
    """Canonical name -> (pinned version, its hashes). Every requirement line must be a `name==version` pin."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    current = None
    for number, line in enumerate(open(path, encoding="utf-8"), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("--hash="):
            assert current is not None, f"{path}:{number}: a hash before any pin"
            pins[current][1].append(stripped.removeprefix("--hash=").rstrip(" \\"))
            continue
        match = PIN.match(stripped)
        assert match, f"{path}:{number}: not a name==version pin: {stripped}"
        current = canonicalize_name(match.group(1))
        assert current not in pins, f"{path}:{number}: {current} pinned twice"
        pins[current] = (Version(match.group(3)), [])
    return pins


def project_requirements() -> list[Requirement]:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as handle:
        return [Requirement(text) for text in tomllib.load(handle)["project"]["dependencies"]]


@pytest.fixture(scope="module")
def pins():
    return read_lock()


def _check_pinned(requirement: Requirement, pins: dict, why: str) -> list[str]:
    name = canonicalize_name(requirement.name)
    if name not in pins:
        return [f"{name} ({why}) is not in the lock"]
    version = pins[name][0]
    if not requirement.specifier.contains(version, prereleases=True):
        return [f"{name}=={version} in the lock, {why} asks for {requirement.specifier}"]
    return []


def test_the_lock_pins_every_dependency_of_pyproject_at_an_allowed_version_with_hashes(pins):
    problems = [p for r in project_requirements() if r.marker is None or r.marker.evaluate(NODE)
                for p in _check_pinned(r, pins, "pyproject.toml")]
    assert not problems, "\n".join(problems) + "\nrun `make lock`"
    assert all(hashes and all(h.startswith("sha256:") for h in hashes) for _, hashes in pins.values())


def test_the_lock_holds_what_the_extras_of_pyproject_ask_for(pins):
    """ray[default,train,data,tune]: the extras' own requirements (read from the installed distributions'
    metadata, for the node's platform) are pinned too, at versions they allow."""
    problems, checked = [], 0
    for requirement in project_requirements():
        for extra in sorted(requirement.extras):
            for text in importlib.metadata.requires(requirement.name) or []:
                needed = Requirement(text)
                if needed.marker is not None and "extra" in str(needed.marker) \
                        and needed.marker.evaluate({**NODE, "extra": extra}):
                    problems += _check_pinned(needed, pins, f"{requirement.name}[{extra}]")
                    checked += 1
    assert checked > 10, "ray's extras were not read (is ray installed?)"
    assert not problems, "\n".join(problems) + "\nrun `make lock`"


def test_the_lock_has_the_cuda_build_of_torch(pins):
    """PyPI's Linux x86_64 torch is the CUDA build; its CUDA libraries come as pinned packages beside it."""
    assert "torch" in pins and "torchvision" in pins and "ray" in pins
    assert any(name.startswith("nvidia-nccl-cu") for name in pins), sorted(pins)
    assert any(name.startswith("nvidia-cudnn-cu") for name in pins), sorted(pins)
    assert "thorax-ray" not in pins  # the wheel is installed on top, without dependencies


def test_the_nodes_install_exactly_the_lock_then_the_wheel_alone():
    with open(os.path.join(REPO, "cluster.yaml"), encoding="utf-8") as handle:
        commands = yaml.safe_load(handle)["setup_commands"]
    sync = [i for i, c in enumerate(commands) if "uv pip sync" in c]
    wheel = [i for i, c in enumerate(commands) if "pip install" in c and "thorax-ray==" in c]
    assert len(sync) == 1 and len(wheel) == 1 and sync[0] < wheel[0], commands
    assert "cluster.lock" in commands[sync[0]] and "--no-deps" in commands[wheel[0]]
    fetched = [c for c in commands[:sync[0]] if "cluster.lock" in c and "aws s3 cp" in c]
    assert fetched, "the lock is fetched beside the wheel before it is synced"


def test_make_lock_regenerates_it_for_the_nodes():
    with open(os.path.join(REPO, "Makefile"), encoding="utf-8") as handle:
        makefile = handle.read()
    recipe = makefile[makefile.index("\nlock:"):].split("\n\n")[0]
    for option in ("pip compile", "pyproject.toml", "--python-version 3.11",
                   "--python-platform x86_64-unknown-linux-gnu", "--generate-hashes", "$(LOCK)"):
        assert option in recipe, (option, recipe)
    assert "LOCK := requirements/cluster.lock" in makefile


def test_the_heads_boto3_keeps_the_locks_botocore(pins):
    """The head adds boto3 for Ray's autoscaler after syncing the lock: pinned to the locked botocore's
    release (boto3 X requires botocore >= X, < the next minor), not the newest boto3, which would move
    botocore past aiobotocore's pin on the node that runs every job's driver."""
    with open(os.path.join(REPO, "cluster.yaml")) as handle:
        head = " ".join(yaml.safe_load(handle)["head_setup_commands"])
    match = re.search(r'"boto3==([0-9.]+)"', head)
    assert match, head
    assert match.group(1) == str(pins["botocore"][0])
