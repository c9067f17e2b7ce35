"""Is CUDA usable on this node? Asked before a GPU job starts its work, once per GPU bundle of the job's
placement group, on the node of that bundle (thorax_ray.placement.wait_until_placed: a small Ray task that
returns `problem_line()`), so a bad node ends the job before Ray Train starts its worker group (which it would
restart on the same node up to `max_failures` times) or the scoring pool starts; and again, as a second line of
defence for a node the work lands on later, in every training worker that Ray Train gave a GPU
(thorax_ray/train/loop.py) and in every scoring actor that Ray gave one (thorax_ray/scoring/scorer.py).

A node whose driver is missing or older than the CUDA the torch wheel is built for, or whose GPU is not visible
or not working, would otherwise fail later with a long CUDA traceback, or (scoring picks `cuda` only when torch
sees it) run on its CPUs while its GPU is paid for. Instead the job stops at its start with one line:

    node ip-10-0-1-23 (10.0.1.23): CUDA is not usable for this GPU job: the NVIDIA driver supports CUDA 12.4,
    this torch 2.14.1 wheel is built for CUDA 13.0: use a driver for CUDA >= 13.0 (the AMI) or a wheel for 12.4

The driver must support at least the wheel's CUDA version (NVIDIA's full compatibility; minor-version
compatibility runs many kernels on an older minor but fails on PTX that needs the newer one).
"""
from __future__ import annotations

import ctypes
import os
import socket
import sys

import torch

from thorax_ray.ray_settings import INSTANCE_ID_ENV, NODE_TYPE_ENV


class CudaUnusable(RuntimeError):
    """CUDA cannot run this node's share of a GPU job; the message is one line naming the node."""


def parse_cuda_version(text: str | None) -> tuple[int, int] | None:
    """A CUDA version as (major, minor): "13.0" -> (13, 0); None (torch's CPU build) -> None."""
    if not text:
        return None
    major, _, minor = text.partition(".")
    return int(major), int(minor.split(".")[0] or 0)


def driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA version the installed NVIDIA driver supports (cuDriverGetVersion, which needs no GPU
    context), or None when there is no driver (libcuda.so.1 cannot be loaded)."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return version.value // 1000, (version.value % 1000) // 10


def driver_problem(driver: tuple[int, int] | None, wheel_cuda: str | None) -> str | None:
    """What is wrong between the driver's CUDA version and the one the torch wheel is built for (None: fine)."""
    wheel = parse_cuda_version(wheel_cuda)
    if wheel is None:
        return f"this torch {torch.__version__} is a CPU build (torch.version.cuda is None): install the CUDA build"
    if driver is None:
        return "no NVIDIA driver (libcuda.so.1 cannot be loaded)"
    if driver < wheel:
        have, need = ".".join(map(str, driver)), ".".join(map(str, wheel))
        return (f"the NVIDIA driver supports CUDA {have}, this torch {torch.__version__} wheel is built for CUDA "
                f"{need}: use a driver for CUDA >= {need} (the AMI) or a wheel for {have}")
    return None


def cuda_problem(device: torch.device) -> str | None:
    """Why CUDA cannot run work on `device` here (None: a small tensor op on it ran)."""
    wrong = driver_problem(driver_cuda_version(), torch.version.cuda)
    if wrong is not None:
        return wrong
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return f"no CUDA device visible (torch.cuda.is_available() is False; CUDA_VISIBLE_DEVICES={visible!r})"
    try:
        total = torch.ones(64, device=device).add_(1).sum().item()
    except Exception as error:  # noqa: BLE001 - any CUDA failure is the answer
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return f"a tensor op on {device} failed: {first}"
    if total != 128:
        return f"a tensor op on {device} computed {total}, not 128"
    return None


# Set by Ray's autoscaler in the environment of the nodes it starts (autoscaler v2, KubeRay, `ray up`'s head),
# inherited by their Ray workers; absent elsewhere, and then not named.
NODE_TYPE_VARIABLE, INSTANCE_VARIABLE = NODE_TYPE_ENV, INSTANCE_ID_ENV  # set by Ray's autoscaler (ray_settings)


def node_name() -> str:
    """This node as the cluster knows it: host name and IP address (Ray's view of it inside a Ray process), then
    its node type and cloud instance when Ray's autoscaler set them: 'ip-10-0-1-23 (10.0.1.23, node type
    gpu_train, instance i-0abc)'."""
    host = socket.gethostname()
    ray = sys.modules.get("ray")
    try:
        address = (ray.util.get_node_ip_address() if ray is not None and ray.is_initialized()
                   else socket.gethostbyname(host))
    except Exception:  # noqa: BLE001 - the name alone still names the node
        address = None
    launched = [f"{what} {os.environ[variable]}" for what, variable in
                (("node type", NODE_TYPE_VARIABLE), ("instance", INSTANCE_VARIABLE)) if os.environ.get(variable)]
    details = [part for part in (address, *launched) if part]
    return f"{host} ({', '.join(details)})" if details else host


def require_cuda(device: torch.device | str) -> None:
    """Raises CudaUnusable (one line naming the node) when `device` is a CUDA device that cannot work here;
    nothing to check for a CPU device."""
    device = torch.device(device)
    if device.type != "cuda":
        return
    problem = cuda_problem(device)
    if problem is not None:
        raise CudaUnusable(f"node {node_name()}: CUDA is not usable for this GPU job: {problem}")


def require_cuda_if_ray_gave_a_gpu() -> None:
    """`require_cuda` on the GPU Ray assigned this actor: `cuda:0`, as Ray sets CUDA_VISIBLE_DEVICES to the
    actor's GPUs (`ray.train.torch.get_device()` is for Train workers only: Train V2 refuses it elsewhere);
    nothing outside Ray or without an assigned GPU."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized() or not ray.get_gpu_ids():
        return
    require_cuda(torch.device("cuda", 0))


def problem_line(device: torch.device | str = "cuda:0") -> str | None:
    """The one line `require_cuda(device)` would raise here, or None when CUDA works: what the pre-flight task
    on each GPU bundle returns (an answer, not an exception, so the driver sees every node's)."""
    try:
        require_cuda(device)
    except CudaUnusable as problem:
        return str(problem)
    return None
