"""The training loop's collectives under the rule NCCL imposes (collectives serve the rank's GPU only; a CPU
tensor fails with "No backend type associated with device type cpu"), checked on the real loop
(`thorax_ray.train.loop.train_loop_per_worker`: its training steps, the loss sum, validation, the gather of
predictions and the broadcast of the epoch's record, DDP included) in gloo groups of one and two ranks.

There is no GPU here, so the rank's device is a stand-in: `RANK_DEVICE`, a CPU device the code can name
("cpu:0", where the host's is "cpu"), handed to the loop where Ray Train hands it the GPU
(`ray.train.torch.get_device`). `DeviceRule` follows every torch call and marks the tensors that are in host
memory (made without a device, `.cpu()`, `.to("cpu")`, numpy), the way CUDA would place them; what torch
makes from device tensors (autograd, DDP's buckets) stays on the device, as on a GPU. Mixing host and device
tensors where CUDA refuses it (writing into a host tensor, cat/stack, non-scalar host operands) raises
CUDA's error, and `checked_collectives` makes every collective of torch.distributed raise NCCL's error for
a tensor in host memory. Object collectives get the GPU NCCL would choose (`_get_object_coll_device`).
A real group whose device map has no CPU backend ("cuda:gloo") shows the error the rule imitates.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import queue
import socket
import traceback
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d
import torch.multiprocessing as mp
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from thorax_ray.train.collectives import Collectives

NCCL_CPU_ERROR = "No backend type associated with device type cpu"
CUDA_MIXED_ERROR = "Expected all tensors to be on the same device"
RANK_DEVICE = torch.device("cpu", 0)  # the rank's "GPU": distinct from the host's torch.device("cpu")
HOST = "_thorax_in_host_memory"

# Every tensor collective of torch.distributed, and the two DDP calls that send its module states
# (its gradient buckets are all-reduced in C++, on the parameters' device, which these see at DDP's start).
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "reduce", "reduce_scatter",
               "reduce_scatter_tensor", "gather", "scatter", "all_to_all", "all_to_all_single", "send", "recv",
               "isend", "irecv", "_broadcast_coalesced", "_verify_params_across_processes")
CONCATENATIONS = {"cat", "concat", "concatenate", "stack", "hstack", "vstack"}
# Calls CUDA allows across devices: host indices, copies, `param.data = moved` (Module.to) and its check.
CROSS_DEVICE = {"__getitem__", "__setitem__", "index_put_", "index_put", "copy_", "__set__",
                "_has_compatible_shallow_copy_type"}
IN_PLACE_OPERATORS = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__", "__ipow__"}


def in_host_memory(tensor: torch.Tensor) -> bool:
    return bool(getattr(tensor, HOST, False))


def _mark(value, host: bool) -> None:
    for leaf in pytree.tree_leaves(value):
        if isinstance(leaf, torch.Tensor):
            setattr(leaf, HOST, host)


def _target(func, args, kwargs) -> torch.device | None:
    """The device a call puts its result on when it names one (`device=`, `.to(device)`, `.cpu()`)."""
    name = getattr(func, "__name__", "")
    if name == "cpu":
        return torch.device("cpu")
    if kwargs.get("device") is not None:
        return torch.device(kwargs["device"])
    if name == "to":
        for arg in args[1:]:
            if isinstance(arg, (torch.device, str)):
                return torch.device(arg)
            if isinstance(arg, torch.Tensor):
                return torch.device("cpu") if in_host_memory(arg) else RANK_DEVICE
    return None


class DeviceRule(TorchFunctionMode):
    """Marks what CUDA would keep in host memory and refuses what CUDA refuses (see the module docstring).
    Two ways of making tensors that torch functions do not see are followed too: `torch.from_numpy` (host)
    and `nn.Parameter(data)` (where its data is)."""

    def __enter__(self):
        real_from_numpy, real_parameter = torch.from_numpy, torch.nn.Parameter.__dict__["__new__"]

        def from_numpy(array):
            tensor = real_from_numpy(array)
            _mark(tensor, True)
            return tensor

        def parameter(cls, data=None, requires_grad=True):
            made = real_parameter.__func__(cls, data, requires_grad)
            if data is not None:
                _mark(made, in_host_memory(data))
            return made

        self._restore = [(torch, "from_numpy", real_from_numpy), (torch.nn.Parameter, "__new__", real_parameter)]
        torch.from_numpy, torch.nn.Parameter.__new__ = from_numpy, staticmethod(parameter)
        return super().__enter__()

    def __exit__(self, *exc):
        for owner, name, value in self._restore:
            setattr(owner, name, value)
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        inputs = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        host = [t for t in inputs if in_host_memory(t)]
        if host and len(host) < len(inputs) and name not in CROSS_DEVICE:
            in_place = (name.endswith("_") and not name.startswith("__")) or name in IN_PLACE_OPERATORS
            into_host = in_place and bool(args) and isinstance(args[0], torch.Tensor) and in_host_memory(args[0])
            if into_host or name in CONCATENATIONS or any(t.dim() > 0 for t in host):
                raise RuntimeError(f"{CUDA_MIXED_ERROR}, but found at least two devices, {RANK_DEVICE} (the rank's "
                                   f"GPU) and cpu! ({name} of {[tuple(t.shape) for t in host]} in host memory)")
        out = func(*args, **kwargs)
        if name == "__set__" and len(args) == 2 and all(isinstance(a, torch.Tensor) for a in args):
            _mark(args[0], in_host_memory(args[1]))  # `param.data = moved` (Module.to) moves the parameter
            return out
        target = _target(func, args, kwargs)
        if target is not None:
            host_target = target != RANK_DEVICE
            if host_target and any(out is t for t in inputs) and not in_host_memory(out):
                out = out.view_as(out)  # `.cpu()` of a device tensor: a host copy, not the device tensor itself
            _mark(out, host_target)
        elif not any(out is t for t in inputs):  # in place: the tensor stays where it is
            _mark(out, len(host) == len(inputs))  # from host tensors only, or made without a device: host
        return out


@contextlib.contextmanager
def checked_collectives(calls: list):
    """Every collective of torch.distributed refuses a tensor in host memory with NCCL's error (else runs, and
    its name is appended to `calls`); object collectives default to the rank's device, as on an NCCL group."""
    inside: list = []  # torch hands a collective to the torch-function mode, which calls it again: check once

    def checked(name, real):
        def collective(*args, **kwargs):
            if inside:
                return real(*args, **kwargs)
            host = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and in_host_memory(t)]
            if host:
                raise RuntimeError(f"{NCCL_CPU_ERROR} ({name} of a {tuple(host[0].shape)} {host[0].dtype} tensor in "
                                   "host memory; NCCL serves the rank's GPU only)")
            calls.append(name)
            inside.append(name)
            try:
                return real(*args, **kwargs)
            finally:
                inside.pop()
        return collective

    patched = [(dist, name, checked(name, getattr(dist, name))) for name in COLLECTIVES]
    patched += [(c10d, name, collective) for _, name, collective in patched if hasattr(c10d, name)]
    patched += [(c10d, "_get_object_coll_device", lambda group=None: str(RANK_DEVICE))]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patched]
    try:
        for module, name, value in patched:
            setattr(module, name, value)
        yield calls
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _in_group(rank: int, world: int, port: int, backend: str, body, args, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        results.put((rank, body(rank, world, *args)))
    except Exception as error:  # noqa: BLE001 - reported to the test
        results.put((rank, f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))
    finally:
        dist.destroy_process_group()


def run_group(world: int, backend: str, body, *args, timeout: float = 90.0) -> list:
    """`body(rank, world, *args)` in `world` processes forked from this one (no re-import) and joined in one
    process group; their results in rank order (an exception as its text). A rank left waiting in a collective
    after another failed is ended."""
    context = mp.get_context("fork")
    results = context.Queue()
    port = _free_port()
    processes = [context.Process(target=_in_group, args=(rank, world, port, backend, body, args, results))
                 for rank in range(world)]
    for process in processes:
        process.start()
    got: dict = {}
    try:
        while len(got) < world:
            failed = any(isinstance(r, str) for r in got.values())
            try:
                rank, result = results.get(timeout=5.0 if failed else timeout)
            except queue.Empty:
                break
            got[rank] = result
    finally:
        for process in processes:
            process.join(timeout=5.0)
            if process.is_alive():
                process.kill()
                process.join()
    return [got.get(rank, "no result: waited in a collective or died") for rank in range(world)]


def _encoded(count: int, seed: int):
    from thorax_ray.labels import FINDINGS
    from thorax_ray.models import MetadataFeatures
    from thorax_ray.train.feeds import EncodedRows

    rng = np.random.default_rng(seed)
    labels = (rng.random((count, len(FINDINGS))) < 0.3).astype(np.float32)
    features = rng.standard_normal((count, MetadataFeatures().dim)).astype(np.float32)
    return EncodedRows([f"{seed:02d}{i:06d}_000.png" for i in range(count)], features, labels)


def real_loop(rank: int, world: int, loop_config: dict) -> dict:
    """`train_loop_per_worker` as a Ray Train worker runs it, on the rank's stand-in GPU, every collective
    checked; Ray Train's worker context and report are stand-ins (this rank's numbers; the reports kept)."""
    import ray
    import ray.train
    import ray.train.torch

    from thorax_ray.train import loop

    reports: list = []
    ray.train.get_context = lambda: SimpleNamespace(get_world_rank=lambda: rank, get_world_size=lambda: world)
    ray.train.torch.get_device = lambda: RANK_DEVICE
    ray.get = lambda value: value  # the driver's ray.put values, handed over as they are
    ray.train.report = lambda metrics, **kwargs: reports.append(metrics)
    calls: list = []
    with checked_collectives(calls), DeviceRule():
        loop.train_loop_per_worker(loop_config)
    return {"calls": Counter(calls), "reports": reports}


def loop_config(tmp_path, world: int, epochs: int = 2) -> dict:
    from thorax_ray.train.config import TrainConfig

    config = TrainConfig.from_dict({"model": {"name": "mlp"}, "optim": {"epochs": epochs},
                                    "data": {"batch_size": 16, "eval_batch_size": 24},
                                    "run": {"workers": world, "threads_per_worker": 1, "storage": str(tmp_path)}})
    train, val = _encoded(96, 1), _encoded(50, 2)
    info = {"run_name": "collectives", "run_dir": str(tmp_path / "collectives"), "split_hash": "test",
            "label_counts": train.labels.sum(axis=0).tolist(), "train_rows": len(train.names), "stored_size": 0,
            "encoded_rows": {"train": train, "val": val}}
    return {"config": config.to_dict(), "info": info}


@pytest.mark.parametrize("world", [1, 2])
def test_the_real_loop_hands_every_collective_a_tensor_on_the_rank_device(tmp_path, world):
    """Two epochs of the real loop: every collective it makes (the loss sum, the gather of validation
    predictions, the broadcast of the epoch's record, DDP's parameter broadcast) passes NCCL's rule, and the
    results agree on every rank (world size 1 runs the same collectives)."""
    results = run_group(world, "gloo", real_loop, loop_config(tmp_path, world))
    assert all(isinstance(r, dict) for r in results), "\n".join(map(str, results))
    for result in results:
        calls, reports = result["calls"], result["reports"]
        assert [r["epoch"] for r in reports] == [1, 2]
        assert calls["all_reduce"] == 2  # the epoch's loss and rows, once an epoch
        assert calls["all_gather"] >= 2 * 2 and calls["broadcast"] >= 2 * 2  # all_gather_object, broadcast_object_list
        if world == 2:
            assert calls["_broadcast_coalesced"] >= 1 and calls["_verify_params_across_processes"] >= 1  # DDP
    assert all(r["reports"] == results[0]["reports"] for r in results)  # the same sums and record everywhere
    history = json.loads((tmp_path / "collectives" / "metrics.json").read_text())["history"]
    assert [h["val_images"] for h in history] == [50, 50]  # every validation row, gathered once


def _under_the_rule(rank: int, world: int, case: str):
    calls: list = []
    with checked_collectives(calls), DeviceRule():
        on_device = torch.zeros(2, dtype=torch.float64, device=RANK_DEVICE)
        if case == "device":  # what the loop does: made on the device, converted and stacked there
            dist.all_reduce(torch.stack([on_device.sum().to(torch.float64), torch.as_tensor(3.0, device=RANK_DEVICE,
                                                                                            dtype=torch.float64)]))
            dist.broadcast_object_list([{"rank": rank}], src=0)  # NCCL's default: the rank's GPU
            dist.all_gather_object([None] * world, rank)
        elif case == "made on the host":  # the regression: the epoch's totals as a new host tensor
            dist.all_reduce(torch.tensor([float(on_device.sum()), 10.0], dtype=torch.float64))
        elif case == "moved to the host":
            dist.all_reduce(on_device.cpu())
        elif case == "from numpy":
            dist.all_reduce(torch.from_numpy(np.zeros(2)))
        elif case == "object collective on the host":
            dist.broadcast_object_list([rank], src=0, device=torch.device("cpu"))
        elif case == "summed into a host tensor":
            total = torch.zeros((), dtype=torch.float64)
            total += on_device.sum()
        elif case == "stacked with a host scalar":
            torch.stack([on_device.sum(), torch.zeros((), dtype=torch.float64)])
    return calls


@pytest.mark.parametrize("case, error", [("made on the host", NCCL_CPU_ERROR), ("moved to the host", NCCL_CPU_ERROR),
                                         ("from numpy", NCCL_CPU_ERROR),
                                         ("object collective on the host", NCCL_CPU_ERROR),
                                         ("summed into a host tensor", CUDA_MIXED_ERROR),
                                         ("stacked with a host scalar", CUDA_MIXED_ERROR)])
def test_the_rule_refuses_what_nccl_and_cuda_refuse(case, error):
    [result] = run_group(1, "gloo", _under_the_rule, case)
    assert isinstance(result, str) and error in result, result


def test_the_rule_passes_tensors_made_and_kept_on_the_device():
    [calls] = run_group(1, "gloo", _under_the_rule, "device")
    assert Counter(calls) == {"all_reduce": 1, "broadcast": 2, "all_gather": 2}, calls


def old_epoch_totals(rank: int, world: int):
    """The loop before the fix: the epoch's loss totals as a new CPU tensor, all-reduced."""
    loss_sum = torch.zeros((), dtype=torch.float64) + rank + 1
    totals = torch.tensor([float(loss_sum), 10 * (rank + 1)], dtype=torch.float64)
    dist.all_reduce(totals)
    return totals.tolist()


def test_a_group_without_a_cpu_backend_refuses_a_cpu_tensor_with_the_error_the_rule_raises():
    """torch's own rule, in a group whose device map has no CPU backend (as NCCL's): the message above."""
    assert all(NCCL_CPU_ERROR in str(r) for r in run_group(2, "cuda:gloo", old_epoch_totals))


def test_collectives_refuse_a_tensor_off_the_training_device_before_the_group_sees_it():
    with pytest.raises(ValueError, match="NCCL has no CPU backend"):
        Collectives("cuda").sum(torch.zeros(2, dtype=torch.float64))


def sums_and_objects(rank: int, world: int):
    with checked_collectives([]), DeviceRule():
        collectives = Collectives(RANK_DEVICE)
        loss_sum = torch.zeros((), dtype=torch.float64, device=RANK_DEVICE) + rank + 1
        totals = collectives.sum_values(loss_sum, 10 * (rank + 1))
        record = collectives.broadcast_object({"from": rank, "val": [0.5, None]} if rank == 0 else None)
        gathered = collectives.gather_objects({"rank": rank, "rows": list(range(rank + 1))})
    return totals, record, gathered


@pytest.mark.parametrize("world", [1, 2])
def test_sum_broadcast_gather_at_every_world_size(world):
    results = run_group(world, "gloo", sums_and_objects)
    expected_totals = [sum(range(1, world + 1)), 10 * sum(range(1, world + 1))]
    for result in results:
        assert not isinstance(result, str), result
        totals, record, gathered = result
        assert totals == expected_totals
        assert record == {"from": 0, "val": [0.5, None]}
        assert gathered == [{"rank": r, "rows": list(range(r + 1))} for r in range(world)]
