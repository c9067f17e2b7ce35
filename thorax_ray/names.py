"""The one check for names that become part of a path: image names from any input (metadata CSVs,
box lists, manifest and list Parquet files, folder listings), model names of `evaluate --scores`, run
and experiment names of `train`/`tune --name`.

A safe name is a single path component: not empty, not `.` or `..`, no `/` or `\\` (no absolute path,
no way up), no `:` (URI schemes, drive letters), no control characters, no leading `~` (home
expansion) and no surrounding whitespace. Joined to a folder, it can only name something inside it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

_FORBIDDEN = re.compile(r"[/\\:\x00-\x1f\x7f]")


class UnsafeNameError(ValueError):
    """A name that would not stay inside its folder; the message names the input and the name."""


def unsafe_reason(value: object) -> str | None:
    """Why `value` is not a safe name, or None when it is one."""
    if not isinstance(value, str):
        return f"not text but {type(value).__name__}"
    if not value:
        return "empty"
    if value in (".", ".."):
        return "a relative folder"
    found = _FORBIDDEN.search(value)
    if found:
        return f"contains {found.group()!r}"
    if value.startswith("~"):
        return "starts with '~'"
    if value != value.strip():
        return "has surrounding whitespace"
    return None


def safe_name(kind: str, value: object, *, where: str | None = None) -> str:
    """Returns `value` when it is a safe name; raises UnsafeNameError naming `where`, `kind` and it."""
    reason = unsafe_reason(value)
    if reason is not None:
        prefix = f"{where}: " if where else ""
        raise UnsafeNameError(f"{prefix}{kind} {value!r} is not a plain file name ({reason})")
    return value  # type: ignore[return-value]


def check_names(kind: str, values: Iterable, *, where: str) -> None:
    """`safe_name` on every value (a column of names); the error also gives the 1-based row."""
    for row, value in enumerate(values, start=1):
        if unsafe_reason(value) is not None:
            safe_name(kind, value, where=f"{where}, row {row}")
