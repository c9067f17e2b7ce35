"""Is CUDA usable on this node? Asked where a GPU job starts its work: in every training worker that Ray Train
gave a GPU (thorax_ray/train/loop.py) and in every scoring actor that Ray gave one (thorax_ray/scoring/scorer.py).

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


def node_name() -> str:
    """This node as the cluster knows it: host name and IP address (Ray's view of it inside a Ray process)."""
    host = socket.gethostname()
    ray = sys.modules.get("ray")
    try:
        address = (ray.util.get_node_ip_address() if ray is not None and ray.is_initialized()
                   else socket.gethostbyname(host))
    except Exception:  # noqa: BLE001 - the name alone still names the node
        return host
    return f"{host} ({address})"


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
