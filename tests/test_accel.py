"""The fast-path decisions (thorax_ray/accel.py): all off on CPU, all on for a CUDA device (decided from
`device.type` alone, so a fake `torch.device("cuda")` is enough here), and the CPU prefetch path is the
plain one."""
from __future__ import annotations

import pytest
import torch

from thorax_ray.accel import CPU_PREFETCH_BATCHES, FastPath, host_threads, input_workers, prefetch_to_device
from thorax_ray.train.batches import Batch
from thorax_ray.train.config import RunSettings, TrainConfig


def test_everything_off_on_cpu():
    fast = FastPath.for_device(torch.device("cpu"))
    assert fast.autocast_dtype is None and not fast.channels_last and not fast.pin_memory
    assert not fast.compile and not fast.cudnn_benchmark and not fast.on_gpu
    assert fast.prefetch_batches == CPU_PREFETCH_BATCHES
    # asking for compile on CPU still gives no compile
    assert not FastPath.for_device("cpu", compile=True).compile
    with fast.autocast():
        assert not torch.is_autocast_enabled("cpu")
    model = torch.nn.Conv2d(1, 2, 3)
    assert fast.maybe_compile(model) is model
    assert fast.prepare_model(model).weight.is_contiguous()


def test_everything_on_for_cuda_device():
    fast = FastPath.for_device(torch.device("cuda"))
    assert fast.on_gpu and fast.autocast_dtype == torch.bfloat16
    assert fast.channels_last and fast.pin_memory and fast.compile and fast.cudnn_benchmark
    assert fast.prefetch_batches > CPU_PREFETCH_BATCHES
    assert "bfloat16" in fast.describe() and "channels_last" in fast.describe()


def test_cuda_overrides():
    assert not FastPath.for_device("cuda", compile=False).compile  # run.compile: false
    assert FastPath.for_device("cuda:1", compile=None).compile  # run.compile: null (default) = auto
    metadata_only = FastPath.for_device("cuda", images=False)
    assert not metadata_only.channels_last and metadata_only.autocast_dtype == torch.bfloat16


def test_run_settings_compile_defaults_to_auto():
    assert RunSettings().compile is None
    config = TrainConfig.from_dict({"run": {"compile": False}})
    assert config.run.compile is False and TrainConfig.from_dict(config.to_dict()).run.compile is False


def test_cpu_prefetch_is_the_plain_path():
    fast = FastPath.for_device("cpu")
    batches = [Batch(image_index=[f"{i}"], labels=torch.full((1, 14), float(i)),
                     images=torch.zeros(1, 1, 4, 4, dtype=torch.uint8), features=None) for i in range(5)]
    made = list(prefetch_to_device(batches, fast, make=lambda b: b))
    assert [b.image_index for b in made] == [["0"], ["1"], ["2"], ["3"], ["4"]]
    assert all(not b.images.is_pinned() for b in made) and made[3].labels[0, 0] == 3
    assert fast.to_device(batches[0]).labels.device.type == "cpu"


def test_host_threads_keeps_order_and_raises():
    assert list(host_threads(range(50), lambda x: x * 2, depth=3)) == [x * 2 for x in range(50)]

    def boom(x):
        if x == 7:
            raise ValueError("bad batch")
        return x

    with pytest.raises(ValueError, match="bad batch"):
        list(host_threads(range(20), boom, depth=2))
    # stopping early does not hang on a producer blocked on the full queue
    taken = []
    for x in host_threads(range(1000), lambda x: x, depth=2):
        taken.append(x)
        if x == 3:
            break
    assert taken == [0, 1, 2, 3]


def test_input_workers_sized_from_cpus():
    assert input_workers(96, 8) == 11  # p4d.24xlarge: 12 vCPUs per GPU, one left for the training worker
    assert input_workers(2, 0) == 1 and input_workers(1, 4) == 1
