"""A lease stored beside the data it guards (a local folder or an s3:// prefix), so that at most one writer
works on it at a time, from any machine, and a writer that died blocks the next one for about a minute.

    with acquire_lease("s3://bucket/scores/_lock.json", wait_s=0, about={"run_id": run_id}) as lease:
        ...                 # renewed every ttl/3 by a background thread (the heartbeat; ttl 60 s by default)
        lease.fence()       # just before committing: a conditional renewal proves the lease is still ours;
                            # raises LeaseLost (commit nothing) when another writer took it over, or when the
                            # store cannot confirm it

This module is the lease's public face: Lease, acquire_lease, the errors (LeaseBusy, LeaseLost,
LeaseUnsupported, defined in thorax_ray.lease_base) and DEFAULT_TTL_S. How each store keeps two writers apart
is its backend's: thorax_ray.lease_s3 (S3 and S3-compatible stores: conditional writes, fenced, with ambiguous
answers resolved by reading the lease back) and thorax_ray.lease_local (local and shared POSIX file systems:
every change under an exclusive flock, the file's modification time as the heartbeat). A store that cannot
give exclusion is refused with LeaseUnsupported. The S3 backend (botocore) is imported with the first s3://
lease: the data layer imports this module, also on the GPU machine, whose image has no botocore.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from thorax_ray import lease_base, storage
from thorax_ray.lease_base import LeaseBusy, LeaseLost, LeaseState, LeaseUnsupported, one_line
from thorax_ray.lease_local import LocalLease

__all__ = ["DEFAULT_TTL_S", "Lease", "LeaseBusy", "LeaseLost", "LeaseUnsupported", "acquire_lease"]

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 60.0
"""A lease not renewed for this long may be taken over: a crashed holder blocks the next run for at most about
this long. The heartbeat renews every ttl/3, so two renewals in a row may fail without losing it."""


@dataclass
class Lease(LeaseState):
    """A held lease (acquire_lease makes it): `fence()` before a commit, `release()` (or `with`) at the end; a
    background thread renews it every ttl/3 meanwhile."""
    _lost: str | None = None
    _failed_renewals: int = 0  # in a row, by the heartbeat
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def fence(self) -> None:
        """Proves the lease is still ours by renewing it with a conditional write now; raises LeaseLost when
        another writer has it, or when the store cannot confirm it (then nothing may be committed). After it
        returns the lease is ours for a full TTL: call it right before a commit."""
        try:
            self.renew()
        except LeaseLost:
            raise
        except Exception as error:
            raise LeaseLost(f"{self.uri}: could not prove the lease is still ours ({one_line(error)}); "
                            "not committing") from error


    def renew(self) -> None:
        """Renews the lease (raises LeaseLost once another writer has it; other errors: try again)."""
        with self._lock:
            if self._lost:
                raise LeaseLost(self._lost)
            try:
                _backend(self.uri, self.endpoint_url).renew(self)
            except LeaseLost as error:
                self._lost = str(error)
                raise

    def release(self) -> None:
        """Stops the heartbeat and deletes the lease if it is still ours (a failure is logged: the lease
        then expires after its TTL)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * lease_base.REQUEST_TIMEOUT_S)
        if self._lost:
            return
        try:
            with self._lock:
                _backend(self.uri, self.endpoint_url).release(self)
        except Exception as error:
            log.warning("%s: could not release the lease (%s); it expires within %.0f s", self.uri,
                        one_line(error), self.ttl_s)

    def _keep_alive(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.renew()
                self._failed_renewals = 0
            except LeaseLost as error:
                log.error("%s; this run will not commit", error)
                return
            except Exception as error:  # the next beat tries again; the fence decides at the commit
                self._failed_renewals += 1
                log.warning("%s: renewal failed (%d in a row): %s", self.uri, self._failed_renewals,
                            one_line(error))

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire_lease(uri: str, *, ttl_s: float = DEFAULT_TTL_S, wait_s: float = 0.0, poll_s: float = 5.0,
                  about: dict | None = None, endpoint_url: str | None = None, keep_alive: bool = True) -> Lease:
    """Takes the lease at `uri` (waiting up to `wait_s` for its holder); raises LeaseBusy when it stays held,
    LeaseUnsupported when the store cannot give exclusion."""
    if ttl_s <= 0:
        raise ValueError(f"lease TTL must be positive, got {ttl_s}")
    backend = _backend(uri, endpoint_url)
    backend.probe()
    deadline = time.monotonic() + wait_s
    while True:
        token = uuid.uuid4().hex
        record = {"token": token, "host": socket.gethostname(), "pid": os.getpid(),
                  "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(about or {})}
        lease = Lease(uri=uri, token=token, ttl_s=ttl_s, record=record, endpoint_url=endpoint_url)
        holder = backend.try_acquire(lease)
        if holder is None:
            if keep_alive:
                lease._thread = threading.Thread(target=lease._keep_alive, name="thorax-lease", daemon=True)
                lease._thread.start()
            return lease
        if time.monotonic() >= deadline:
            raise LeaseBusy(uri, holder, reason=holder.get("busy"))
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())) or 0.01)


def _backend(uri: str, endpoint_url: str | None):
    if uri.startswith(("s3://", "s3a://")):
        from thorax_ray.lease_s3 import S3Lease  # deferred: botocore (absent on the GPU machine, see bench/gpu.py)
        return S3Lease(uri, endpoint_url)
    if storage.is_remote(uri):
        raise LeaseUnsupported(f"{uri}: leases need a local path or s3:// (no conditional writes known for this "
                               "store)")
    return LocalLease(uri)
