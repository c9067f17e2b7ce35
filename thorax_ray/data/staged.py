"""Staged outputs: the one way prepare and scoring make a run's files visible all at once.

    with staged_run(out, stage_uri, about={"run_id": run_id}) as staged:
        ...                                        # write everything under stage_uri (OUT's lease is held)
        staged.commit("_commits/<run_id>.json", record)   # last act: one atomic write of the commit record

A run holds OUT's lease (`OUT/_lock.json`, thorax_ray.lease) from before it reads what is there until its
commit, writes its files under its own stage folder (prepare: `versions/<version>/`; scoring:
`_staging/<run_id>/`, whose files it publishes into their partitions just before committing), proves that
the lease is still its own with a conditional renewal (the lease's fence: a run whose lease another run took
over commits nothing) and writes the commit record in one step (local: write + rename; object stores: one
PUT). Readers go through commit records only, so the files of a run that failed or was killed are never
read. On any failure (an error, Ctrl-C, SIGTERM) before the commit, the stage folder is removed; a
`scratch` stage (emptied by publishing) is removed after the commit too. The lease is released last.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from thorax_ray import storage
from thorax_ray.lease import DEFAULT_TTL_S, Lease, acquire_lease

LOCK_FILE = "_lock.json"  # the lease of the run writing to OUT (thorax_ray.lease)
RUN_ID_TIME = "%Y%m%dT%H%M%SZ"  # the UTC start time at the head of run ids and prepared versions
TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"  # UTC times inside commit records


def new_run_id(now: float | None = None) -> str:
    """`YYYYMMDDTHHMMSSZ-xxxxxx`: UTC start time (sortable) and a random suffix (unique)."""
    return time.strftime(RUN_ID_TIME, time.gmtime(now)) + "-" + uuid.uuid4().hex[:6]


def utc_timestamp(now: float | None = None) -> str:
    """`YYYY-MM-DDTHH:MM:SSZ` of `now` (default: the current time)."""
    return time.strftime(TIMESTAMP, time.gmtime(now))


def write_record(uri: str, record: dict, *, endpoint_url: str | None = None) -> str:
    """Writes a commit record in one step (local: write + rename; object stores: one PUT); returns its URI."""
    storage.write_json(uri, record, endpoint_url=endpoint_url)
    fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
    return storage.to_uri(fs, path)


def remove_folder(uri: str, *, endpoint_url: str | None = None) -> None:
    """Deletes a folder and everything under it, if it is there."""
    fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass


@dataclass
class StagedRun:
    """One run writing to OUT under its stage folder while it holds OUT's lease."""

    out: str
    stage: str  # URI of the folder the run writes into before its commit
    lease: Lease
    endpoint_url: str | None = None
    committed: str | None = None  # URI of the commit record, once written

    def commit(self, name: str, record: dict) -> str:
        """Writes `OUT/<name>` (the commit record) as the run's last act, right after proving with a conditional
        write that the lease is still ours (raises thorax_ray.lease.LeaseLost otherwise); returns its URI."""
        self.lease.fence()
        self.committed = write_record(storage.join(self.out, name), record, endpoint_url=self.endpoint_url)
        return self.committed


@contextmanager
def staged_run(out: str, stage: str, *, ttl_s: float = DEFAULT_TTL_S, wait_s: float = 0.0, about: dict | None = None,
               scratch: bool = False, endpoint_url: str | None = None) -> Iterator[StagedRun]:
    """Holds OUT's lease around a run that stages its files under `stage` (see the module docstring):
    raises thorax_ray.lease.LeaseBusy when another run holds it past `wait_s`; removes `stage` unless the
    run committed (and, when `scratch`, also after the commit); releases the lease last."""
    lease = acquire_lease(storage.join(out, LOCK_FILE), ttl_s=ttl_s, wait_s=wait_s, about=about,
                          endpoint_url=endpoint_url)
    run = StagedRun(out=out, stage=stage, lease=lease, endpoint_url=endpoint_url)
    try:
        yield run
    finally:
        try:
            if run.committed is None or scratch:
                remove_folder(stage, endpoint_url=endpoint_url)
        finally:
            lease.release()
