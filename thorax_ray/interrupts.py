"""Ctrl-C and SIGTERM as one exception, so a job can stop its workers, remove what it staged, say so in
one line and exit with the shell's code for the signal (130 for SIGINT, 143 for SIGTERM).

    with interruptible():
        try:
            work()
        except Interrupted as stop:
            console.error(f"interrupted ({stop.name}): ...")
            return stop.exit_code

Python turns SIGINT into KeyboardInterrupt by itself, but SIGTERM ends the process at once, skipping
every `finally`; inside `interruptible()` both raise `Interrupted` (a KeyboardInterrupt, so code that
already cleans up on KeyboardInterrupt cleans up on SIGTERM too). Install it in a job's main thread only.
"""
from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @classmethod
    def from_exit_code(cls, code: int) -> "Interrupted | None":
        """What stopped a job that exited with `code`: the `Interrupted` whose `exit_code` it is (SIGINT, SIGTERM),
        else None."""
        return next((cls(signum) for signum in SIGNALS if 128 + signum == code), None)


_received: list[int] = []  # signals seen by the handler, newest last


def _raise(signum: int, frame) -> None:
    _received.append(int(signum))
    raise Interrupted(signum)


def as_interrupted(error: KeyboardInterrupt) -> Interrupted:
    """An `Interrupted` for any KeyboardInterrupt: code that waits in C (Ray's `ray.get`) turns a pending
    signal into a plain KeyboardInterrupt after our handler ran; the handler recorded which signal it was."""
    if isinstance(error, Interrupted):
        return error
    return Interrupted(_received[-1] if _received else signal.SIGINT)


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` in the main thread while inside; the previous handlers
    come back on the way out."""
    previous = {signum: signal.signal(signum, _raise) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def leave_signals_to_parent() -> None:
    """For worker processes (a pool's initializer): a terminal's Ctrl-C reaches the whole process
    group, but only the parent decides; SIGTERM (how the parent stops its pool) ends a worker at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
