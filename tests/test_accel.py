"""The fast-path decisions (thorax_ray/accel.py): all off on CPU, all on for a CUDA device (decided from
`device.type` alone, so a fake `torch.device("cuda")` is enough here), and the CPU prefetch path is the
plain one."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from thorax_ray.accel import CPU_PREFETCH_BATCHES, FastPath, host_threads, prefetch_to_device
from thorax_ray.data.preprocess import Batch
from thorax_ray.train.config import RunSettings, TrainConfig


def test_everything_off_on_cpu():
    fast = FastPath.for_device(torch.device("cpu"))
    assert fast.autocast_dtype is None and not fast.channels_last
    assert not fast.compile and not fast.on_gpu
    assert fast.prefetch_batches == CPU_PREFETCH_BATCHES
    # asking for compile on CPU still gives no compile
    assert not FastPath.for_device("cpu", compile=True).compile
    with fast.autocast():
        assert not torch.is_autocast_enabled("cpu")
    model = torch.nn.Conv2d(4, 8, 3)  # > 1 channel in and out: channels_last differs from contiguous
    assert fast.maybe_compile(model) is model
    prepared = fast.prepare_model(model)
    assert prepared is model and prepared.weight.device.type == "cpu"
    assert prepared.weight.is_contiguous()
    assert not prepared.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.zeros(2, 4, 5, 5)
    assert fast.images_layout(images) is images
    batch = torch.zeros(2, 3)
    assert fast.pin(batch) is batch  # no page-locking on CPU


def test_everything_on_for_cuda_device():
    fast = FastPath.for_device(torch.device("cuda"))
    assert fast.on_gpu and fast.autocast_dtype == torch.bfloat16
    assert fast.channels_last and fast.compile
    assert fast.prefetch_batches > CPU_PREFETCH_BATCHES
    assert "bfloat16" in fast.describe() and "channels_last" in fast.describe()
    assert "pinned prefetch" in fast.describe()
    # the memory-format decisions, applied on CPU tensors (the fake device cannot hold any)
    on_cpu = dataclasses.replace(fast, device=torch.device("cpu"))
    weight = on_cpu.prepare_model(torch.nn.Conv2d(4, 8, 3)).weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    images = fast.images_layout(torch.zeros(2, 4, 5, 5))
    assert images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()


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
    made_from = []
    made = list(prefetch_to_device(batches, fast, make=lambda b: made_from.append(b) or b))
    assert [b.image_index for b in made] == [["0"], ["1"], ["2"], ["3"], ["4"]]
    assert len(made_from) == 5 and all(a is b for a, b in zip(made_from, batches)) and made[3].labels[0, 0] == 3
    # no copies, no pinning: the very tensors of the host batches
    assert all(m.images is b.images and m.labels is b.labels for m, b in zip(made, batches))


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

