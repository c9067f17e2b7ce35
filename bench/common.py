"""Shared benchmark plumbing: peak-memory sampling and the closing JSON line."""
from __future__ import annotations

import json
import threading
import time

import psutil


class PeakMemory:
    """Samples the machine's used memory in a thread; `peak_mb` is the peak above the level at start
    (covers Ray workers and DataLoader workers, which are not children of this process)."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        self._base = psutil.virtual_memory().used
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, (psutil.virtual_memory().used - self._base) / 2**20)
            time.sleep(self.interval_s)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def emit(figures: dict) -> None:
    """Every benchmark ends with one line of JSON holding its figures."""
    print(json.dumps(figures, sort_keys=False))
