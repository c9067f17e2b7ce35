"""One line of progress per stage, printed by the job's driver for people.

    with StageProgress("prepare", total=len(manifest), unit="images") as progress:
        dataset.map_batches(fn, fn_args=(progress.counter,), ...)   # workers call counter.add.remote(n)
        ...

On a terminal the line updates in place; in a log (no TTY) a line is printed every `every_pct` percent,
so a job's log has ~10 progress lines per stage instead of Ray's per-operator progress bars. Workers count
with a tiny Ray actor (`add` is fire-and-forget); the driver polls it from a background thread.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    def add(self, n: int) -> None:
        self.count += int(n)

    def value(self) -> int:
        return self.count


def count(counter, n: int) -> None:
    """Worker side: adds `n` to a stage's counter (no-op without one)."""
    if counter is not None and n:
        counter.add.remote(n)


class StageProgress:
    def __init__(self, label: str, total: int, *, unit: str = "images", every_pct: int = 10,
                 interval_s: float = 2.0, stream: TextIO | None = None):
        import ray  # deferred: Ray (absent on the GPU machine)

        self.label, self.total, self.unit, self.every_pct = label, max(0, int(total)), unit, every_pct
        self.interval_s = interval_s
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.counter = ray.remote(num_cpus=0)(_Counter).remote()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._printed_pct = -1
        self._printed_done = -1
        self._final: int | None = None

    def finish(self, done: int) -> None:
        """The stage's true count (from its result), for the last line."""
        self._final = int(done)

    def _done(self) -> int:
        import ray  # deferred: Ray (absent on the GPU machine)

        try:
            return int(ray.get(self.counter.value.remote(), timeout=10))
        except Exception:  # noqa: BLE001 - progress is best effort; the job's own result decides
            return 0

    def line(self, done: int) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        share = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        return (f"[{self.label}] {done:,}/{self.total:,} {self.unit}{share}, {done / elapsed:.0f} {self.unit}/s, "
                f"{elapsed:.0f} s")

    def _show(self, done: int, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r" + self.line(done) + ("\n" if final else ""))
            self.stream.flush()
            return
        pct = int(100 * done / self.total) if self.total else 100
        step = pct // self.every_pct * self.every_pct
        if (final and done != self._printed_done) or step > self._printed_pct:
            self._printed_pct, self._printed_done = step, done
            print(self.line(done), file=self.stream, flush=True)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._show(self._done())

    def __enter__(self) -> "StageProgress":
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._poll, name=f"progress-{self.label}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind, *_) -> None:
        import ray  # deferred: Ray (absent on the GPU machine)

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if kind is None:
            self._show(self._done() if self._final is None else self._final, final=True)
        elif self.tty:
            self.stream.write("\n")
        # The stage's work holds the counter's handle (an actor pool's constructor arguments), which outlives
        # the stage in a long-lived driver: without this, each stage left an actor and its worker process.
        try:
            ray.kill(self.counter)
        except Exception:  # noqa: BLE001 - best effort: never hide the stage's own error (Ray may be stopping)
            pass
