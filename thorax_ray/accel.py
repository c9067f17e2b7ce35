"""The GPU fast path, decided in one place for training, validation and scoring.

    fast = FastPath.for_device(device, compile=config.run.compile)
    model = fast.prepare_model(model)               # channels_last (GPU image models)
    for batch in prefetch_to_device(host_batches, fast):   # pinned host memory, copies one batch ahead
        with fast.autocast():                       # bf16 on GPU
            logits = model(batch.images)

On a CUDA device everything is on: bf16 autocast, `channels_last`, pinned host batches copied with
`non_blocking=True` on a side stream one batch ahead of the compute, cuDNN autotuning and (unless
turned off) `torch.compile`. On CPU everything is off and the code paths are the plain ones, so CPU
results do not change. The decisions only read `device.type`: a `torch.device("cuda")` on a machine
without a GPU gives the GPU decisions (what the unit tests check) without touching CUDA.
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields, is_dataclass, replace

import torch

# Batches the input pipeline keeps ready ahead of the model (Ray Data `prefetch_batches`).
GPU_PREFETCH_BATCHES = 4
CPU_PREFETCH_BATCHES = 2


@dataclass(frozen=True)
class FastPath:
    device: torch.device
    autocast_dtype: torch.dtype | None  # bf16 on GPU, None (fp32) on CPU
    channels_last: bool
    compile: bool  # torch.compile the training model
    prefetch_batches: int  # batches the input pipeline prepares ahead

    @classmethod
    def for_device(cls, device: torch.device | str, *, compile: bool | None = None,
                   images: bool = True) -> "FastPath":
        """`compile`: None means "on when on GPU"; `images`: False for the metadata MLP (no memory
        format to change)."""
        device = torch.device(device)
        gpu = device.type == "cuda"
        return cls(device=device, autocast_dtype=torch.bfloat16 if gpu else None,
                   channels_last=gpu and images,
                   compile=gpu if compile is None else (bool(compile) and gpu),
                   prefetch_batches=GPU_PREFETCH_BATCHES if gpu else CPU_PREFETCH_BATCHES)

    @property
    def on_gpu(self) -> bool:
        """Also decides pinned host batches (copied with non_blocking=True) and cuDNN autotuning."""
        return self.device.type == "cuda"

    def describe(self) -> str:
        if not self.on_gpu:
            return f"{self.device.type}: fp32, no fast path"
        parts = [f"autocast {str(self.autocast_dtype).replace('torch.', '')}" if self.autocast_dtype else "fp32",
                 "channels_last" if self.channels_last else "", "pinned prefetch",
                 "torch.compile" if self.compile else ""]
        return f"{self.device}: " + ", ".join(p for p in parts if p)

    def autocast(self):
        """bf16 autocast on GPU; a no-op context on CPU."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def setup(self) -> None:
        """Process-wide switches (call once per worker/actor)."""
        if self.on_gpu:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Moves the model to the device, channels_last for image models on GPU (in place, returns it)."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def maybe_compile(self, model: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(model) if self.compile else model

    def images_layout(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def to_device(self, value):
        """A tensor (or a dataclass/tuple/list/dict of them) on the device: pinned and non-blocking on GPU;
        unchanged objects on CPU."""
        return _map_tensors(value, self._tensor_to_device)

    def pin(self, value):
        """Page-locks the tensors of a host batch (GPU only; a no-op on CPU)."""
        return _map_tensors(value, lambda t: t.pin_memory() if self.on_gpu and not t.is_pinned() else t)

    def _tensor_to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.on_gpu:
            return tensor.to(self.device)
        if tensor.device.type == "cpu" and not tensor.is_pinned():
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)


def _map_tensors(value, fn: Callable[[torch.Tensor], torch.Tensor]):
    if isinstance(value, torch.Tensor):
        return fn(value)
    if is_dataclass(value) and not isinstance(value, type):
        return replace(value, **{f.name: _map_tensors(getattr(value, f.name), fn) for f in fields(value)})
    if isinstance(value, tuple):
        return tuple(_map_tensors(v, fn) for v in value)
    if isinstance(value, list):
        return [_map_tensors(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def _record_stream(value, stream) -> None:
    _map_tensors(value, lambda t: (t.record_stream(stream), t)[1] if t.is_cuda else t)


def host_threads(value: Iterable, make: Callable, depth: int) -> Iterator:
    """`make(item)` for each item of `value`, computed `depth` items ahead in one background thread
    (arrow -> numpy -> pinned tensors release the GIL), in order. Exceptions surface in the caller."""
    if depth <= 0:
        yield from (make(item) for item in value)
        return
    done = object()
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        iterator = iter(value)
        try:
            for item in iterator:
                if stop.is_set():
                    return
                slots.put((make(item), None))
            slots.put((done, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            slots.put((done, error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:  # e.g. stops the Ray Data stream behind an abandoned epoch
                close()

    thread = threading.Thread(target=work, name="thorax-host-batches", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        deadline = time.monotonic() + 5.0
        while thread.is_alive() and time.monotonic() < deadline:  # unblock a producer waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def prefetch_to_device(batches: Iterable, fast: FastPath, *, make: Callable | None = None) -> Iterator:
    """Yields `make(batch)` (default: the batch itself) with its tensors on the device.

    CPU: `make` runs inline and tensors are moved with `.to(device)`; nothing else changes. GPU:
    `make` and pinning run in a background thread, and the host-to-device copy of batch k+1 is issued on
    a side CUDA stream before batch k is handed to the caller, so copies overlap compute."""
    make = make or (lambda batch: batch)
    if not fast.on_gpu:
        for batch in batches:
            yield fast.to_device(make(batch))
        return
    copy_stream = torch.cuda.Stream(device=fast.device)
    host = host_threads(batches, lambda batch: fast.pin(make(batch)), depth=fast.prefetch_batches)

    def issue(batch):
        with torch.cuda.stream(copy_stream):
            return fast.to_device(batch)

    pending = None
    try:
        for batch in host:
            ready = issue(batch)
            if pending is not None:
                yield _hand_over(pending, copy_stream)
            pending = ready
        if pending is not None:
            yield _hand_over(pending, copy_stream)
    finally:
        host.close()


def _hand_over(batch, copy_stream):
    current = torch.cuda.current_stream(copy_stream.device)
    current.wait_stream(copy_stream)
    _record_stream(batch, current)
    return batch

