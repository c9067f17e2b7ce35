"""A lease stored beside the data it guards (a local folder or an s3:// prefix), so that at most one writer
works on it at a time, from any machine, and a writer that died blocks the next one for about a minute.

    with acquire_lease("s3://bucket/scores/_lock.json", wait_s=0, about={"run_id": run_id}) as lease:
        ...                 # renewed every ttl/3 by a background thread (the heartbeat; ttl 60 s by default)
        lease.fence()       # just before committing: a conditional renewal proves the lease is still ours;
                            # raises LeaseLost (commit nothing) when another writer took it over, or when the
                            # store cannot confirm it

Object stores (S3 and S3-compatible): the lease is one JSON object holding the holder's random token, created
with a conditional PUT (`If-None-Match: *`, one creator wins), renewed with `If-Match: <its ETag>`, taken over
once expired with `If-Match` on the expired object's ETag (one successor wins) and released with a conditional
DELETE. The windows this closes:
- fencing: `fence()` is a real conditional write, so a holder whose renewals failed and whose lease a successor
  took over learns it at its commit (412), not after it;
- ambiguous writes: a PUT whose answer is lost (timeout, dropped connection, 5xx) may have been applied, and
  its retry then gets 412 against our own new ETag. Every such outcome is resolved by reading the lease back:
  our token there means our write applied (its ETag is adopted), the old ETag means it did not (the PUT is
  sent again), anything else means another writer's record stands. So neither a renewal nor an acquire takes
  its own lease for another run's. The lease's requests are therefore never retried blindly by the client
  (one attempt each, connect/read timeouts of REQUEST_TIMEOUT_S); this module retries them, within a time
  budget set by the TTL and the project's storage retry budget (`storage.s3_attempts()`);
- 409 ConditionalRequestConflict (another conditional write on the key is in flight): retried with backoff;
  when it persists, acquire raises LeaseBusy (the jobs exit 75, as for a held lease);
- stores that ignore conditional headers: probed once per output (a scratch object beside the lease) and
  refused with LeaseUnsupported, a ValueError the jobs print as `error: ...`.
Expiry compares the holder's `expires_at` with the reader's clock: hosts' clocks must agree to well under
the TTL (NTP does).

Local (and shared POSIX) filesystems: every change of the lease file (create, renew, take over, release, the
fence) happens while holding an exclusive `flock` on that file (plus a per-process lock, as NFS's emulation of
flock does not separate threads), so two successors of an expired lease cannot both take it over. The
record names the holder; the file's modification time is the heartbeat (renewal sets it to now). A file system
without locks is refused with LeaseUnsupported. On NFS, flock maps to NFS byte-range locks (Linux >= 2.6.12):
mount without `nolock`/`local_lock`.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import random
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from thorax_ray import storage

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 60.0
"""A lease not renewed for this long may be taken over: a crashed holder blocks the next run for at most about
this long. The heartbeat renews every ttl/3, so two renewals in a row may fail without losing it."""
REQUEST_TIMEOUT_S = 10.0  # connect and read timeout of one lease request to an object store
LOCAL_LOCK_WAIT_S = 10.0  # the longest wait for the local lease file's flock (held for microseconds)
CONFLICT_RETRY_S = 3.0  # how long a 409 ConditionalRequestConflict is retried before the lease counts as busy


class LeaseBusy(RuntimeError):
    """Another holder has the lease (its record is in `holder`), or the store keeps answering that another
    conditional write on it is in flight (`reason`)."""

    def __init__(self, uri: str, holder: dict, reason: str | None = None):
        self.uri, self.holder = uri, holder
        if reason:
            super().__init__(f"{uri} is busy: {reason}")
            return
        about = ", ".join(f"{k} {v}" for k, v in holder.items() if k not in ("token", "expires_at", "ttl_s"))
        left = holder.get("expires_at", 0) - time.time()
        super().__init__(f"{uri} is held by another run ({about}; expires in {max(left, 0):.0f} s unless renewed)")


class LeaseLost(RuntimeError):
    """The lease expired and another writer took it over, or its holder cannot prove it still holds it:
    stop before writing anything visible."""


class LeaseUnsupported(ValueError):
    """The store cannot keep two writers apart: an S3-compatible store that ignores conditional writes
    (If-None-Match / If-Match), or a local file system without file locks."""


@dataclass
class Lease:
    uri: str
    token: str
    ttl_s: float
    record: dict
    endpoint_url: str | None = None
    _etag: str | None = None
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
            raise LeaseLost(f"{self.uri}: could not prove the lease is still ours ({_one_line(error)}); "
                            "not committing") from error

    check = fence  # the name the callers used before the lease fenced

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
            self._thread.join(timeout=2 * REQUEST_TIMEOUT_S)
        if self._lost:
            return
        try:
            with self._lock:
                _backend(self.uri, self.endpoint_url).release(self)
        except Exception as error:
            log.warning("%s: could not release the lease (%s); it expires within %.0f s", self.uri,
                        _one_line(error), self.ttl_s)

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
                            _one_line(error))

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
        return _S3Lease(uri, endpoint_url)
    if storage.is_remote(uri):
        raise LeaseUnsupported(f"{uri}: leases need a local path or s3:// (no conditional writes known for this "
                               "store)")
    return _LocalLease(uri)


def _labelled(error: BaseException, operation: str, uri: str, tries: int) -> BaseException:
    """`error` with the note the jobs' one-line storage message reads (thorax_ray.storage_errors: operation and
    key) and the tries made, when the client reports them."""
    error.add_note(f"storage request: {operation} {uri}")
    metadata = getattr(error, "response", {}).get("ResponseMetadata") if hasattr(error, "response") else None
    if isinstance(metadata, dict):
        metadata["RetryAttempts"] = tries - 1
    return error


def _without_userinfo(url: str) -> str:
    """An endpoint URL without any `user:password@` in it (never print credentials)."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# -- local and shared POSIX file systems ----------------------------------------------------------------------------

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _thread_lock(path: str) -> threading.Lock:
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(path, threading.Lock())


class _LocalLease:
    def __init__(self, uri: str):
        self.uri = uri
        self.path = storage.filesystem(uri)[1]

    def probe(self) -> None:
        pass  # a file system without locks is refused by the first flock

    @contextmanager
    def _exclusive(self, *, create: bool) -> Iterator[int | None]:
        """The lease file, open and exclusively locked (None when it is absent and not `create`d). A file
        released (unlinked) while we waited for its lock is not the lease any more: lock the one there now."""
        with _thread_lock(self.path):
            while True:
                try:
                    descriptor = os.open(self.path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
                except FileNotFoundError:
                    yield None
                    return
                try:
                    self._lock(descriptor)
                    opened, there = os.fstat(descriptor), os.stat(self.path)
                    if (opened.st_dev, opened.st_ino) == (there.st_dev, there.st_ino):
                        break
                except FileNotFoundError:
                    pass
                except BaseException:
                    os.close(descriptor)
                    raise
                os.close(descriptor)
            try:
                yield descriptor
            finally:
                os.close(descriptor)  # releases the flock

    def _lock(self, descriptor: int) -> None:
        """An exclusive flock on `descriptor`, waited for at most LOCAL_LOCK_WAIT_S (it is held for microseconds
        at a time: longer means a stuck process or file server: LeaseBusy, not a silent wait)."""
        deadline, pause = time.monotonic() + LOCAL_LOCK_WAIT_S, 0.002
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LeaseBusy(self.uri, {}, reason=f"its file lock stayed taken for {LOCAL_LOCK_WAIT_S:.0f} s "
                                    "(a stuck process or file server)") from None
            except OSError as error:
                if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise LeaseUnsupported(f"{self.path}: this file system does not support file locks "
                                           f"({error.strerror}); a lease needs them (or use s3://)") from None
                raise
            time.sleep(pause)
            pause = min(2 * pause, 0.05)

    @staticmethod
    def _read(descriptor: int) -> tuple[dict, float] | None:
        """(record, heartbeat time) or None when the file is empty (just created, or never written)."""
        data = os.pread(descriptor, 1 << 20, 0)
        try:
            record = json.loads(data)
        except ValueError:
            return None
        return (record, os.fstat(descriptor).st_mtime) if isinstance(record, dict) else None

    @staticmethod
    def _write(descriptor: int, record: dict) -> None:
        data = json.dumps(record).encode()
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, data, 0)

    def try_acquire(self, lease: Lease) -> dict | None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with self._exclusive(create=True) as descriptor:
            found = self._read(descriptor)
            if found is not None:
                record, beat = found
                expires = beat + float(record.get("ttl_s", lease.ttl_s))
                if time.time() < expires:
                    return {**record, "expires_at": expires}
            self._write(descriptor, {**lease.record, "ttl_s": lease.ttl_s})  # free, or expired: taken over
            return None

    def renew(self, lease: Lease) -> None:
        with self._exclusive(create=False) as descriptor:
            found = self._read(descriptor) if descriptor is not None else None
            if found is None or found[0].get("token") != lease.token:
                raise LeaseLost(f"{self.uri}: expired and taken over by another run")
            os.utime(descriptor)

    def release(self, lease: Lease) -> None:
        with self._exclusive(create=False) as descriptor:
            found = self._read(descriptor) if descriptor is not None else None
            if found is not None and found[0].get("token") == lease.token:
                os.unlink(self.path)


# -- S3 and S3-compatible object stores -----------------------------------------------------------------------------

_CLIENTS: dict[tuple, object] = {}
_CLIENTS_GUARD = threading.Lock()
_PROBED: set[tuple] = set()  # (endpoint, bucket, key) of the outputs whose store honours conditional writes


def _s3_client(endpoint: str | None):
    """One botocore client per endpoint and region: one attempt per request (the lease resolves and retries
    its own conditional writes), REQUEST_TIMEOUT_S to connect and to read."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    with _CLIENTS_GUARD:
        if (endpoint, region) not in _CLIENTS:
            import botocore.session
            from botocore.config import Config

            config = Config(connect_timeout=REQUEST_TIMEOUT_S, read_timeout=REQUEST_TIMEOUT_S,
                            retries={"total_max_attempts": 1, "mode": "standard"})
            _CLIENTS[endpoint, region] = botocore.session.get_session().create_client(
                "s3", endpoint_url=endpoint, region_name=region, config=config)
        return _CLIENTS[endpoint, region]


class _Conflicted(OSError):
    """409 ConditionalRequestConflict for longer than CONFLICT_RETRY_S."""


def _classify(error: Exception) -> str:
    """precondition (412) | conflict (409) | missing (404) | unsupported (501) | transient (may succeed if
    tried again; for a write: may have been applied) | fatal."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status == 412 or code == "PreconditionFailed":
            return "precondition"
        if status == 409 or code == "ConditionalRequestConflict":
            return "conflict"
        if code == "NoSuchBucket":
            return "fatal"
        if status == 404 or code in ("NoSuchKey", "NotFound"):
            return "missing"
        if status == 501 or code == "NotImplemented":
            return "unsupported"
        if status >= 500 or status == 429 or code in ("SlowDown", "RequestTimeout", "Throttling"):
            return "transient"
        return "fatal"
    if isinstance(error, (ConnectionError, HTTPClientError, TimeoutError, ConnectionResetError)):
        return "transient"
    return "fatal"


class _S3Lease:
    def __init__(self, uri: str, endpoint_url: str | None):
        self.uri = uri
        self.bucket, self.key = uri.split("://", 1)[1].split("/", 1)
        self.endpoint = endpoint_url or storage.endpoint_from_env()
        self.client = _s3_client(self.endpoint)

    def _body(self, lease: Lease) -> bytes:
        return json.dumps({**lease.record, "ttl_s": lease.ttl_s, "expires_at": time.time() + lease.ttl_s}).encode()

    @staticmethod
    def _budget(lease: Lease) -> float:
        """How long one write is retried: well inside the heartbeat's period (ttl/3)."""
        return min(max(lease.ttl_s / 6, 2.0), 3 * REQUEST_TIMEOUT_S)

    def _read(self, budget_s: float = 5.0) -> tuple[dict, str] | None:
        """(record, ETag) of the lease, None when there is none; transient errors retried within the storage
        retry budget (`storage.s3_attempts()` tries) and `budget_s`."""
        started, pause, tries = time.monotonic(), 0.1, 0
        while True:
            tries += 1
            try:
                reply = self.client.get_object(Bucket=self.bucket, Key=self.key)
                return json.loads(reply["Body"].read() or b"{}"), reply["ETag"]
            except Exception as error:
                kind = _classify(error)
                if kind == "missing":
                    return None
                if kind not in ("transient", "conflict") or self._spent(started, budget_s, pause, tries):
                    raise _labelled(error, "GetObject", self.uri, tries)
            time.sleep(pause)
            pause = min(2 * pause, 1.0)

    @staticmethod
    def _spent(started: float, budget_s: float, pause: float, tries: int) -> bool:
        return tries >= storage.s3_attempts() or time.monotonic() - started + pause > budget_s

    def _write(self, lease: Lease, *, expect: str | None) -> bool:
        """One conditional PUT of our record: creates the lease (`expect` None: If-None-Match: *) or replaces
        the version whose ETag is `expect` (If-Match). True: the stored lease is ours and `lease._etag` is its
        ETag; False: another writer's record stands (or, for If-Match, there is none). Outcomes that may hide
        an applied write (transient errors; a 412 that may answer a resend of it) are resolved by reading the
        lease back; a 409 is retried for CONFLICT_RETRY_S, then raises _Conflicted."""
        condition = {"IfMatch": expect} if expect else {"IfNoneMatch": "*"}
        started, pause, tries = time.monotonic(), 0.05, 0
        while True:
            tries += 1
            try:
                reply = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(lease),
                                               ContentType="application/json", **condition)
                lease._etag = reply["ETag"]
                return True
            except Exception as error:
                kind = _classify(error)
                if kind in ("fatal", "unsupported"):
                    raise _labelled(error, "PutObject", self.uri, tries)
                last = error
            if kind == "missing" and expect:  # If-Match on a key that is gone (some stores answer 404)
                kind = "precondition"
            if kind != "conflict":
                verdict = self._resolve(lease, expect)
                if verdict is not None:
                    return verdict
            waited = time.monotonic() - started
            if kind == "conflict" and waited + pause > CONFLICT_RETRY_S:
                raise _Conflicted(f"another conditional write on it stays in flight (409 ConditionalRequestConflict "
                                  f"for {waited:.0f} s)")
            if kind != "conflict" and self._spent(started, self._budget(lease), pause, tries):
                raise _labelled(last, "PutObject", self.uri, tries)
            time.sleep(pause * random.uniform(0.5, 1.0))
            pause = min(2 * pause, 1.0)

    def _resolve(self, lease: Lease, expect: str | None) -> bool | None:
        """After a write whose outcome is unknown: True when the stored lease carries our token in a version
        other than `expect` (our write applied; its ETag is adopted), None when nothing changed (send it
        again), False when another writer's record stands."""
        try:
            found = self._read(budget_s=1.0)
        except Exception as error:
            if _classify(error) == "fatal":
                raise
            return None  # cannot tell yet
        if found is None:
            return None if expect is None else False
        record, etag = found
        if record.get("token") == lease.token and etag != expect:
            lease._etag = etag
            return True
        return None if etag == expect else False

    def probe(self) -> None:
        """Checks once per output (and process) that the store honours If-None-Match and If-Match on PUT, on a
        scratch object beside the lease; raises LeaseUnsupported when it ignores either."""
        if (self.endpoint, self.bucket, self.key) in _PROBED:
            return
        scratch = f"{self.key}.probe-{uuid.uuid4().hex[:12]}"
        put = dict(Bucket=self.bucket, Key=scratch, Body=b"conditional-write probe")
        try:
            self._probe_step(put, {"IfNoneMatch": "*"}, "If-None-Match", expect_refusal=False)
            self._probe_step(put, {"IfNoneMatch": "*"}, "If-None-Match", expect_refusal=True)
            self._probe_step(put, {"IfMatch": '"00000000000000000000000000000000"'}, "If-Match", expect_refusal=True)
        finally:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=scratch)
            except Exception as error:
                log.warning("%s: could not delete the probe object %s (%s)", self.uri, scratch, _one_line(error))
        _PROBED.add((self.endpoint, self.bucket, self.key))

    def _probe_step(self, put: dict, condition: dict, header: str, *, expect_refusal: bool) -> None:
        store = f"the store at {_without_userinfo(self.endpoint)}" if self.endpoint else "the store"
        unsupported = LeaseUnsupported(
            f"{self.uri}: {store} does not honour conditional writes ({header} on PUT), so its lease cannot keep "
            "two runs off this output; use AWS S3 or an S3-compatible store with conditional writes, or a "
            "local/shared POSIX path")
        try:
            self.client.put_object(**put, **condition)
        except Exception as error:
            kind = _classify(error)
            if kind == "precondition" and expect_refusal:
                return
            if kind == "unsupported" or (kind == "fatal" and "NotImplemented" in str(error)):
                raise unsupported from None
            raise _labelled(error, "PutObject", f"s3://{self.bucket}/{put['Key']}", 1)
        if expect_refusal:
            raise unsupported

    def try_acquire(self, lease: Lease) -> dict | None:
        try:
            for _ in range(3):
                if self._write(lease, expect=None):
                    return None
                found = self._read()
                if found is None:
                    continue  # released meanwhile
                record, etag = found
                if time.time() < float(record.get("expires_at", 0)):
                    return record
                if self._write(lease, expect=etag):  # take over the expired lease: one successor wins
                    return None
        except _Conflicted as busy:
            return {"busy": str(busy)}
        found = self._read()
        return found[0] if found else {"busy": "contended (it changed hands three times while we looked)"}

    def renew(self, lease: Lease) -> None:
        try:
            ours = self._write(lease, expect=lease._etag)
        except _Conflicted as busy:
            raise OSError(f"{self.uri}: renewal not confirmed: {busy}") from None
        if not ours:
            raise LeaseLost(f"{self.uri}: expired and taken over by another run")

    def release(self, lease: Lease) -> None:
        """Deletes the lease if it is still ours: a DELETE with If-Match on our ETag; where the store refuses
        conditional deletes, the lease is read back and deleted only if it still is the version we wrote."""
        started, pause, tries = time.monotonic(), 0.1, 0
        while True:
            tries += 1
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=lease._etag)
                return
            except Exception as error:
                kind = _classify(error)
                if kind in ("precondition", "missing"):
                    return  # taken over or gone: nothing of ours to delete
                if kind != "transient":
                    break  # conditional deletes refused: read back below
                if self._spent(started, self._budget(lease), pause, tries):
                    raise _labelled(error, "DeleteObject", self.uri, tries)
            time.sleep(pause)
            pause = min(2 * pause, 1.0)
        found = self._read()
        if found is not None and found[0].get("token") == lease.token and found[1] == lease._etag:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)
