"""A lease stored beside the data it guards (a local folder or an s3:// prefix), so that at most one writer
works on it at a time, from any machine, and a writer that died does not block the next one for long.

    with acquire_lease("s3://bucket/scores/_lock.json", ttl_s=600, wait_s=0, about={"run_id": run_id}) as lease:
        ...                 # renewed every ttl/3 by a background thread
        lease.check()       # raises LeaseLost before committing if another writer took it over

Object stores (S3 and S3-compatible): the lease is one JSON object created with a conditional PUT
(`If-None-Match: *`, only one creator wins), renewed with `If-Match: <its ETag>`, taken over once expired
with `If-Match` on the expired object's ETag (only one successor wins) and released with a conditional
DELETE. Local (and shared POSIX) filesystems: the file is created with O_EXCL; its modification time is the
heartbeat; an expired file is taken over by renaming it away (only one successor's rename succeeds).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from fsspec.asyn import sync

from thorax_ray import storage


class LeaseBusy(RuntimeError):
    """Another holder has the lease (its record is in `holder`)."""

    def __init__(self, uri: str, holder: dict):
        self.uri, self.holder = uri, holder
        about = ", ".join(f"{k} {v}" for k, v in holder.items() if k not in ("token", "expires_at"))
        left = holder.get("expires_at", 0) - time.time()
        super().__init__(f"{uri} is held by another run ({about}; expires in {max(left, 0):.0f} s unless renewed)")


class LeaseLost(RuntimeError):
    """The lease expired and another writer took it over: stop before writing anything visible."""


@dataclass
class Lease:
    uri: str
    token: str
    ttl_s: float
    record: dict
    endpoint_url: str | None = None
    _etag: str | None = None
    _lost: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def check(self) -> None:
        if self._lost:
            raise LeaseLost(f"{self.uri}: {self._lost}")

    def renew(self) -> None:
        try:
            _backend(self.uri, self.endpoint_url).renew(self)
        except LeaseLost as error:
            self._lost = str(error)
            raise

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not self._lost:
            _backend(self.uri, self.endpoint_url).release(self)

    def _keep_alive(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.renew()
            except LeaseLost:
                return
            except OSError:  # a transient storage error: the next beat tries again before expiry
                continue

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire_lease(uri: str, *, ttl_s: float = 600.0, wait_s: float = 0.0, poll_s: float = 5.0,
                  about: dict | None = None, endpoint_url: str | None = None, keep_alive: bool = True) -> Lease:
    """Takes the lease at `uri` (waiting up to `wait_s` for its holder); raises LeaseBusy when it stays held."""
    backend = _backend(uri, endpoint_url)
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
            raise LeaseBusy(uri, holder)
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())) or 0.01)


def _backend(uri: str, endpoint_url: str | None):
    if uri.startswith(("s3://", "s3a://")):
        return _S3Lease(uri, endpoint_url)
    if storage.is_remote(uri):
        raise ValueError(f"{uri}: leases need a local path or s3:// (no conditional writes known for this store)")
    return _LocalLease(uri)


class _LocalLease:
    def __init__(self, uri: str):
        self.path = storage.filesystem(uri)[1]

    def _read(self) -> tuple[dict, float] | None:
        try:
            with open(self.path) as handle:
                record = json.loads(handle.read() or "{}")
            return record, os.stat(self.path).st_mtime
        except (FileNotFoundError, ValueError):
            return None

    def try_acquire(self, lease: Lease) -> dict | None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(3):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                found = self._read()
                if found is None:
                    continue  # released or being written: look again
                record, beat = found
                expires = beat + float(record.get("ttl_s", lease.ttl_s))
                if time.time() < expires:
                    return {**record, "expires_at": expires}
                stale = f"{self.path}.stale-{uuid.uuid4().hex[:8]}"
                try:
                    os.rename(self.path, stale)  # one successor wins; the others see it gone
                except FileNotFoundError:
                    continue
                os.unlink(stale)
                continue
            with os.fdopen(descriptor, "w") as handle:
                handle.write(json.dumps({**lease.record, "ttl_s": lease.ttl_s}))
            return None
        found = self._read()
        return found[0] if found else {"holder": "unknown (contended)"}

    def renew(self, lease: Lease) -> None:
        found = self._read()
        if found is None or found[0].get("token") != lease.token:
            raise LeaseLost("expired and taken over by another run")
        os.utime(self.path)

    def release(self, lease: Lease) -> None:
        found = self._read()
        if found is not None and found[0].get("token") == lease.token:
            os.unlink(self.path)


class _S3Lease:
    def __init__(self, uri: str, endpoint_url: str | None):
        self.fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
        self.bucket, self.key = path.split("/", 1)

    def _body(self, lease: Lease) -> bytes:
        return json.dumps({**lease.record, "expires_at": time.time() + lease.ttl_s}).encode()

    def _put(self, lease: Lease, **condition) -> bool:
        try:
            reply = self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=self._body(lease),
                                    ContentType="application/json", **condition)
        except OSError as error:
            if _precondition_failed(error):
                return False
            raise
        lease._etag = reply.get("ETag")
        return True

    def _read(self) -> tuple[dict, str] | None:
        try:
            reply = self.fs.call_s3("get_object", Bucket=self.bucket, Key=self.key)
        except FileNotFoundError:
            return None

        data = sync(self.fs.loop, reply["Body"].read)  # the body is an asynchronous stream
        return json.loads(data or b"{}"), reply["ETag"]

    def try_acquire(self, lease: Lease) -> dict | None:
        for _ in range(3):
            if self._put(lease, IfNoneMatch="*"):
                return None
            found = self._read()
            if found is None:
                continue
            record, etag = found
            if time.time() < float(record.get("expires_at", 0)):
                return record
            if self._put(lease, IfMatch=etag):  # take over the expired lease: one successor wins
                return None
        found = self._read()
        return found[0] if found else {"holder": "unknown (contended)"}

    def renew(self, lease: Lease) -> None:
        if not self._put(lease, IfMatch=lease._etag):
            raise LeaseLost("expired and taken over by another run")

    def release(self, lease: Lease) -> None:
        try:
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key, IfMatch=lease._etag)
        except (FileNotFoundError, OSError):
            pass  # already gone or taken over: nothing of ours to delete


def _precondition_failed(error: OSError) -> bool:
    text = f"{error} {getattr(error, '__cause__', '')}"
    return "PreconditionFailed" in text or "412" in text or "At least one of the pre-conditions" in text
