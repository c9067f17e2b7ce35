"""`cluster.yaml` checked offline: against Ray's own cluster-config schema (the defaults `ray up` merges in
included, no AWS call), and for the properties the runbook relies on: no credentials in the file, an
IAM instance profile on every node type, the dashboard/Jobs API never open to the internet, only SSH
open in the security group, the package installed at pyproject's version, bounded autoscaling, disks
and object store sized for the 112k-image dataset."""
from __future__ import annotations

import copy
import os
import re
import tomllib

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_YAML = os.path.join(REPO, "cluster.yaml")
MIN_DISK_GB = 100  # room for the 45 GB of NIH ChestX-ray14 PNGs as spill/scratch + prepared shards (6-30 GB from 224 to 512 px) + logs

SECRET_PATTERNS = [
    r"(?<![A-Z0-9])(AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[A-Z0-9]{16}(?![A-Z0-9])",  # access key ids
    r"aws_secret_access_key", r"aws_access_key_id", r"aws_session_token",
    r"SecretAccessKey", r"AccessKeyId", r"SessionToken",
    r"AWS_SECRET", r"AWS_ACCESS_KEY",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])",  # shape of a secret access key
]


@pytest.fixture(scope="module")
def text() -> str:
    with open(CLUSTER_YAML) as handle:
        return handle.read()


@pytest.fixture(scope="module")
def raw(text) -> dict:
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    """The config as `ray up` uses it: merged with Ray's AWS defaults, setup commands merged per node kind."""
    from ray.autoscaler._private.util import prepare_config

    return prepare_config(copy.deepcopy(raw))


def package_version() -> str:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)["project"]["version"]


def strings(value):
    """Every string value of a parsed YAML tree (comments are not values)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def test_valid_against_rays_schema(prepared):
    from ray.autoscaler._private.util import validate_config

    validate_config(prepared)  # raises jsonschema.ValidationError on any unknown or mistyped field
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_no_credentials_anywhere(text, raw):
    for pattern in SECRET_PATTERNS:
        match = re.search(pattern, text)
        assert match is None, f"cluster.yaml looks like it holds a credential: {match.group(0)!r} ({pattern})"
    assert "ssh_private_key" not in raw.get("auth", {})
    for local, remote in ((v, k) for k, v in raw.get("file_mounts", {}).items()):
        assert ".aws" not in local and ".aws" not in remote, "AWS credential files must not be copied to nodes"


def test_every_node_type_has_an_instance_profile_and_imdsv2(raw):
    for name, node_type in raw["available_node_types"].items():
        profile = node_type["node_config"].get("IamInstanceProfile")
        assert profile and (profile.get("Name") or profile.get("Arn")), f"{name}: no IamInstanceProfile"
        assert node_type["node_config"].get("MetadataOptions", {}).get("HttpTokens") == "required", name
    head = raw["available_node_types"][raw["head_node_type"]]["node_config"]["IamInstanceProfile"]
    workers = {repr(t["node_config"]["IamInstanceProfile"]) for n, t in raw["available_node_types"].items()
               if n != raw["head_node_type"]}
    assert repr(head) not in workers, "workers should not get the head's EC2 rights"


def test_dashboard_and_jobs_api_only_on_localhost(prepared):
    head = " ".join(prepared["head_start_ray_commands"])
    assert re.search(r"--dashboard-host[= ]127\.0\.0\.1(\s|$)", head), head
    for value in strings(prepared):
        assert "0.0.0.0" not in value, f"something binds or opens to every address: {value!r}"
    for kind in ("head_start_ray_commands", "worker_start_ray_commands"):  # Ray Client: not opened up either
        assert "ray-client-server-port" not in " ".join(prepared[kind]), kind


def test_security_group_opens_only_ssh(raw, prepared):
    rules = prepared["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        assert (rule.get("FromPort"), rule.get("ToPort")) == (22, 22), f"extra inbound rule: {rule}"
    for name, node_type in raw["available_node_types"].items():
        # Node types naming their own groups would bypass the check above (their rules live in AWS).
        assert "SecurityGroupIds" not in node_type["node_config"], f"{name}: check its group's rules, then this test"
        assert "NetworkInterfaces" not in node_type["node_config"], name


def test_ray_starts_from_the_virtualenv(prepared):
    """Jobs run with the PATH of the `ray start` process: the package's venv must come first on it."""
    for kind in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in prepared[kind] if "ray start" in c]
        assert start and all(c.startswith('export PATH="$HOME/thorax/bin:$PATH";') for c in start), start


def test_token_auth_on_every_node(raw, prepared):
    assert "~/.ray/auth_token" in raw["file_mounts"]
    for commands in (prepared["head_start_ray_commands"], prepared["worker_start_ray_commands"]):
        start = [c for c in commands if " ray start" in c or "/ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), commands


def test_package_installed_at_pyprojects_version(prepared):
    version = package_version()
    for kind in ("head_setup_commands", "worker_setup_commands"):
        commands = "\n".join(prepared[kind])
        assert f'"thorax-ray=={version}"' in commands, f"{kind} do not pin thorax-ray=={version}"
        assert f"thorax_ray-{version}-" in commands  # the wheel fetched is that version
        assert "--python 3.11" in commands  # requires-python of pyproject
    assert not re.search(r"thorax-ray(?!==)", "\n".join(c for c in prepared["setup_commands"] if "pip install" in c))


def test_autoscaling_bounds(raw, prepared):
    types = raw["available_node_types"]
    head = raw["head_node_type"]
    assert prepared["available_node_types"][head]["max_workers"] == 0
    total = 0
    for name, node_type in types.items():
        if name == head:
            continue
        low, high = node_type.get("min_workers", 0), node_type["max_workers"]
        assert low == 0, f"{name}: nothing should run (and cost) while idle"
        assert 1 <= high <= raw["max_workers"], name
        total += high
    assert raw["max_workers"] <= total  # the global bound is what binds
    assert 0 < raw["idle_timeout_minutes"] <= 30
    gpu_types = {n: t for n, t in types.items() if t["resources"].get("GPU")}
    assert gpu_types and "GPU" not in types[head]["resources"]
    assert max(t["max_workers"] for t in gpu_types.values() if t["resources"]["GPU"] == 8) >= 16  # docs/scaling.md


def test_disks_fit_the_dataset(raw):
    for name, node_type in raw["available_node_types"].items():
        mappings = node_type["node_config"].get("BlockDeviceMappings", [])
        sizes = [m["Ebs"]["VolumeSize"] for m in mappings if "Ebs" in m]
        assert sizes and max(sizes) >= MIN_DISK_GB, f"{name}: disk {sizes} GB"


def test_object_store_memory_set(prepared):
    for kind in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in prepared[kind] if "ray start" in c]
        assert start and all("--object-store-memory=" in c for c in start), kind
