"""Shared benchmark plumbing: peak-memory sampling and the closing JSON line."""
from __future__ import annotations

import json
import threading
import time

import psutil


def _tree_bytes(root: psutil.Process) -> int:
    """Proportional set size (PSS) summed over `root` and all its descendants: each page shared by k
    processes counts 1/k in each, so the object store's shared memory (mapped by the raylet and the
    workers) and shared libraries are counted once, not once per worker."""
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total


class PeakMemory:
    """Samples memory in a thread; `peak_mb` is the peak above the level at start.

    scope="tree" (default): PSS of this process and its descendants (a private local Ray started by this
    process: raylet with the object store, workers, actors); not disturbed by other programs on the machine. scope="machine": the machine's used memory (for a cluster this process did not start)."""

    def __init__(self, interval_s: float = 0.1, scope: str = "tree"):
        if scope not in ("tree", "machine"):
            raise ValueError(f"scope must be 'tree' or 'machine', got {scope!r}")
        self.interval_s = interval_s
        self.scope = scope
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._root = psutil.Process()

    def _used(self) -> int:
        return _tree_bytes(self._root) if self.scope == "tree" else psutil.virtual_memory().used

    def __enter__(self) -> "PeakMemory":
        self._base = self._used()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, (self._used() - self._base) / 2**20)
            time.sleep(self.interval_s)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, (self._used() - self._base) / 2**20)


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def emit(figures: dict) -> None:
    """Every benchmark ends with one line of JSON holding its figures."""
    print(json.dumps(figures, sort_keys=False))
