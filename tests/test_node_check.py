"""The per-node CUDA check a GPU job runs where it starts (thorax_ray/node_check.py), on the CPU: the node's
CUDA (driver, devices, a tensor op) replaced by what each failing node would report."""
from __future__ import annotations

import ast
import os
import socket

import pytest
import torch

from thorax_ray import node_check
from thorax_ray.node_check import CudaUnusable, driver_problem, parse_cuda_version, require_cuda

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def gpu_node(monkeypatch):
    """A node where everything works: driver for CUDA 13.0, the wheel built for 13.0, a GPU visible; the tensor
    op runs on the CPU in its place."""
    real_ones = torch.ones
    monkeypatch.setattr(node_check, "driver_cuda_version", lambda: (13, 0))
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch, "ones", lambda *args, device=None, **kwargs: real_ones(*args, **kwargs))
    return monkeypatch


def _one_line_naming_this_node(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"node {socket.gethostname()}"), message
    assert "CUDA is not usable for this GPU job" in message
    return message


def test_a_gpu_worker_on_a_node_without_a_visible_cuda_device_stops_with_one_line_naming_the_node(gpu_node):
    gpu_node.setattr(torch.cuda, "is_available", lambda: False)
    gpu_node.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(CudaUnusable) as error:
        require_cuda(torch.device("cuda", 0))
    assert "no CUDA device visible (torch.cuda.is_available() is False; CUDA_VISIBLE_DEVICES='')" in \
        _one_line_naming_this_node(error)


def test_a_working_gpu_passes_and_a_cpu_device_is_not_checked(gpu_node):
    require_cuda("cuda:0")
    gpu_node.setattr(node_check, "cuda_problem", lambda device: pytest.fail("a CPU worker was checked"))
    require_cuda(torch.device("cpu"))
    require_cuda(torch.device("cpu", 0))


@pytest.mark.parametrize("driver, wheel, problem", [
    ((13, 0), "13.0", None), ((13, 2), "13.0", None), ((14, 0), "13.0", None), ((12, 9), "12.8", None),
    ((12, 4), "13.0", "the NVIDIA driver supports CUDA 12.4, this torch"),
    ((13, 0), "13.1", "built for CUDA 13.1: use a driver for CUDA >= 13.1"),
    ((11, 8), "12.1", "supports CUDA 11.8"),
    (None, "13.0", "no NVIDIA driver (libcuda.so.1 cannot be loaded)"),
    ((13, 0), None, "is a CPU build (torch.version.cuda is None)"),
])
def test_the_driver_must_support_the_cuda_version_of_the_wheel(driver, wheel, problem):
    found = driver_problem(driver, wheel)
    assert found is None if problem is None else problem in found, found


def test_versions_parse():
    assert parse_cuda_version("13.0") == (13, 0) and parse_cuda_version("12.8") == (12, 8)
    assert parse_cuda_version("12") == (12, 0) and parse_cuda_version(None) is None


def test_a_driver_older_than_the_wheel_is_named_before_the_missing_device(gpu_node):
    gpu_node.setattr(node_check, "driver_cuda_version", lambda: (12, 4))
    gpu_node.setattr(torch.cuda, "is_available", lambda: False)  # what torch says on such a node
    with pytest.raises(CudaUnusable) as error:
        require_cuda("cuda")
    assert "driver supports CUDA 12.4, this torch" in _one_line_naming_this_node(error)


def test_a_failing_tensor_op_is_reported_by_its_first_line(gpu_node):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device\n"
                           "CUDA kernel errors might be asynchronously reported at some other API call")

    gpu_node.setattr(torch, "ones", broken)
    with pytest.raises(CudaUnusable) as error:
        require_cuda("cuda:0")
    assert _one_line_naming_this_node(error).endswith(
        "a tensor op on cuda:0 failed: CUDA error: no kernel image is available for execution on the device")


def test_outside_ray_nothing_is_assigned_so_nothing_is_checked(monkeypatch):
    monkeypatch.setattr(node_check, "require_cuda", lambda device: pytest.fail("checked outside Ray"))
    node_check.require_cuda_if_ray_gave_a_gpu()


def test_ray_s_gpu_is_checked_in_a_ray_actor_without_train_s_api(gpu_node):
    """Inside a Ray actor with a GPU (a scoring actor): cuda:0, the first of the GPUs Ray made visible to it, is
    checked. Before, it asked `ray.train.torch.get_device()`, which Train V2 refuses outside a Train worker:
    every GPU scoring actor would have failed at its start (the fake-GPU cluster stood that function in)."""
    import sys
    import types

    checked = []
    fake_ray = types.SimpleNamespace(is_initialized=lambda: True, get_gpu_ids=lambda: [3])
    gpu_node.setitem(sys.modules, "ray", fake_ray)
    gpu_node.setitem(sys.modules, "ray.train.torch", None)  # importing it fails: the check must not need it
    gpu_node.setattr(node_check, "require_cuda", checked.append)
    node_check.require_cuda_if_ray_gave_a_gpu()
    assert checked == [torch.device("cuda", 0)]
    fake_ray.get_gpu_ids = lambda: []  # a CPU actor of the same job
    node_check.require_cuda_if_ray_gave_a_gpu()
    assert checked == [torch.device("cuda", 0)]


def _source_of(path: str, qualname: str) -> str:
    """A function's source read from the file (importing the loop and the scorer takes seconds)."""
    tree = ast.parse(open(os.path.join(REPO, path), encoding="utf-8").read())
    names = qualname.split(".")
    for name in names:
        tree = next(node for node in ast.walk(tree) if getattr(node, "name", None) == name)
    return ast.unparse(tree)


def test_the_training_worker_and_the_scoring_actor_run_the_check_at_their_start():
    """Where the check is wired: right after the training worker learns its device, and in the scoring actor
    before it picks one (which would otherwise fall back to the CPU)."""
    worker = _source_of("thorax_ray/train/loop.py", "start_worker")
    assert worker.index("require_cuda(device)") < worker.index("create_model(")
    actor = _source_of("thorax_ray/scoring/scorer.py", "Scorer.__init__")
    assert actor.index("require_cuda_if_ray_gave_a_gpu()") < actor.index("self.device =")


def test_the_pre_flight_answer_is_the_line_require_cuda_raises_or_none(gpu_node):
    assert node_check.problem_line() is None
    gpu_node.setattr(torch.cuda, "is_available", lambda: False)
    gpu_node.setenv("CUDA_VISIBLE_DEVICES", "")
    line = node_check.problem_line()
    with pytest.raises(CudaUnusable) as error:
        require_cuda("cuda:0")
    assert line == str(error.value) and "\n" not in line


def test_the_node_type_and_instance_are_named_when_ray_s_autoscaler_set_them(monkeypatch):
    host = socket.gethostname()
    monkeypatch.delenv(node_check.NODE_TYPE_VARIABLE, raising=False)
    monkeypatch.delenv(node_check.INSTANCE_VARIABLE, raising=False)
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "10.0.1.23")
    assert node_check.node_name() == f"{host} (10.0.1.23)"
    monkeypatch.setenv(node_check.NODE_TYPE_VARIABLE, "gpu_train")
    monkeypatch.setenv(node_check.INSTANCE_VARIABLE, "i-0abc")
    assert node_check.node_name() == f"{host} (10.0.1.23, node type gpu_train, instance i-0abc)"

    def unresolved(name):
        raise OSError("no address")

    monkeypatch.setattr(socket, "gethostbyname", unresolved)
    assert node_check.node_name() == f"{host} (node type gpu_train, instance i-0abc)"
    monkeypatch.delenv(node_check.NODE_TYPE_VARIABLE)
    monkeypatch.delenv(node_check.INSTANCE_VARIABLE)
    assert node_check.node_name() == host


def test_a_node_the_pre_flight_check_refused_ends_the_job_with_its_line_and_exit_69(capsys):
    """wait_until_placed raises CudaUnusable in the driver itself (no Ray error around it)."""
    from thorax_ray.cli import run_main

    line = "node ip-10-0-1-23 (10.0.1.23): CUDA is not usable for this GPU job: no NVIDIA driver"

    def main(argv):
        raise CudaUnusable(line + " (and 3 more of the job's 8 GPU bundles)")

    with pytest.raises(SystemExit) as stop:
        run_main(main, [])
    assert stop.value.code == 69
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {line} (and 3 more of the job's 8 GPU bundles)"]
