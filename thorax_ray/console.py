"""The package's console lines for people: the one place it prints.

    console.say("train", "resnet18 on prepared data ...")   # stdout: "[train] resnet18 on prepared data ..."
    console.error("error: no such file: x.csv")              # stderr, as given

Rules every stage keeps: a line says which stage speaks (`[stage] ...`), is flushed at once (a job's log
under `ray job submit` shows it when it happens), and progress is a few whole lines per stage, never a
bar redrawn in place (`thorax_ray.progress` for progress counted on Ray workers). Diagnostics for
developers go to `logging` instead; a job's result (its summary) is what the job prints at its end.
"""
from __future__ import annotations

import sys


def line(text: str) -> None:
    """`text` as one line on stdout, flushed (for lines that continue a stage's line above, e.g. indented)."""
    print(text, file=sys.stdout, flush=True)


def say(stage: str, text: str) -> None:
    """`[stage] text` on stdout, flushed."""
    line(f"[{stage}] {text}")


def error(text: str) -> None:
    """`text` as one line on stderr, flushed: why a job stopped (`error: ...`, `interrupted (...): ...`)."""
    print(text, file=sys.stderr, flush=True)
