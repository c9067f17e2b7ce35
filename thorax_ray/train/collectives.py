"""The training loop's collectives outside DDP, on the training device.

NCCL (the process group Ray Train creates when workers have GPUs) serves CUDA tensors only: a collective on
a CPU tensor fails with `No backend type associated with device type cpu`. So every tensor handed to a
collective here lives on the device the worker trains on, and object collectives name that device. The
collectives run at every world size, one worker included: a world-size-1 shortcut would hide the code path
that multi-worker runs take (Ray Train creates a process group for one worker too).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


class Collectives:
    """Sum, broadcast and gather across the Ray Train worker group, on `device`."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)

    def _check(self, tensor: torch.Tensor) -> None:
        if tensor.device.type != self.device.type:
            raise ValueError(f"collective on a {tensor.device} tensor; the process group serves {self.device} "
                             "(NCCL has no CPU backend): build it on the training device")

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) of a tensor on the training device, in place; returns it."""
        self._check(tensor)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_values(self, *values: torch.Tensor | float | int) -> list[float]:
        """Sums scalars (device tensors, kept on the device until the one host read, or plain numbers)
        across workers; returns them as floats."""
        stacked = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device).reshape(())
                               if not isinstance(v, torch.Tensor) else v.detach().to(torch.float64).reshape(())
                               for v in values])
        return self.sum(stacked).tolist()

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """`obj` of rank `src` on every rank (pickled through a tensor on the training device)."""
        box = [obj]
        dist.broadcast_object_list(box, src=src, device=self.device)
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
