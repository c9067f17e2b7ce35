"""The loop's collectives under the rule NCCL imposes (no backend for CPU tensors), reproduced on the CPU with
a process group whose device map has no CPU backend ("cuda:gloo"), and their results on real gloo groups of
one and two ranks (the world-size-1 group runs the same code path)."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from thorax_ray.train.collectives import Collectives

NCCL_CPU_ERROR = "No backend type associated with device type cpu"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _in_group(rank: int, world: int, port: int, backend: str, body, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        results[rank] = body(rank, world)
    except Exception as error:  # noqa: BLE001 - reported to the test
        results[rank] = f"{type(error).__name__}: {error}"
    finally:
        dist.destroy_process_group()


def run_group(world: int, backend: str, body) -> list:
    """Runs `body(rank, world)` in `world` processes joined in one process group; returns their results."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_in_group, args=(world, _free_port(), backend, body, results), nprocs=world, join=True)
        return [results[rank] for rank in range(world)]


def old_epoch_totals(rank: int, world: int):
    """What the loop did before: the epoch's loss totals as a new CPU tensor, all-reduced."""
    loss_sum = torch.zeros((), dtype=torch.float64) + rank + 1  # on the training device (the CPU here)
    totals = torch.tensor([float(loss_sum), 10 * (rank + 1)], dtype=torch.float64)
    dist.all_reduce(totals)
    return totals.tolist()


def loop_collectives(rank: int, world: int):
    collectives = Collectives("cpu")
    loss_sum = torch.zeros((), dtype=torch.float64) + rank + 1
    totals = collectives.sum_values(loss_sum, 10 * (rank + 1))
    record = collectives.broadcast_object({"from": rank, "val": [0.5, None]} if rank == 0 else None)
    gathered = collectives.gather_objects({"rank": rank, "rows": list(range(rank + 1))})
    return totals, record, gathered


def test_a_cpu_tensor_has_no_backend_in_a_group_without_a_cpu_backend():
    """The defect: NCCL-like device map (cuda only) + CPU totals = the error every multi-GPU run hit."""
    assert all(NCCL_CPU_ERROR in str(r) for r in run_group(2, "cuda:gloo", old_epoch_totals))


def test_collectives_refuse_a_tensor_off_the_training_device_before_the_group_sees_it():
    with pytest.raises(ValueError, match="NCCL has no CPU backend"):
        Collectives("cuda").sum(torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("world", [1, 2])
def test_sum_broadcast_gather_at_every_world_size(world):
    results = run_group(world, "gloo", loop_collectives)
    expected_totals = [sum(range(1, world + 1)), 10 * sum(range(1, world + 1))]
    for totals, record, gathered in results:
        assert totals == expected_totals
        assert record == {"from": 0, "val": [0.5, None]}
        assert gathered == [{"rank": r, "rows": list(range(r + 1))} for r in range(world)]
