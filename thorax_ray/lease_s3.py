"""The lease on S3 and S3-compatible object stores (thorax_ray.lease picks it for s3:// and s3a://).

The lease is one JSON object holding the holder's random token, created with a conditional PUT
(`If-None-Match: *`, one creator wins), renewed with `If-Match: <its ETag>`, taken over once expired with
`If-Match` on the expired object's ETag (one successor wins) and released with a conditional DELETE (where a
store refuses conditional deletes: read back, and deleted only if it is still the version we wrote). The windows
this closes:
- fencing: `fence()` is a real conditional write, so a holder whose renewals failed and whose lease a successor
  took over learns it at its commit (412), not after it;
- ambiguous writes: a PUT whose answer is lost (timeout, dropped connection, 5xx) may have been applied, and
  its retry then gets 412 against our own new ETag. Every such outcome is resolved by reading the lease back:
  our token there means our write applied (its ETag is adopted), the old ETag means it did not (the PUT is
  sent again), anything else means another writer's record stands. So neither a renewal nor an acquire takes
  its own lease for another run's. The lease's requests are therefore never retried blindly by the client
  (one attempt each, connect/read timeouts of lease_base.REQUEST_TIMEOUT_S); this module retries them, within a time
  budget set by the TTL and the project's storage retry budget (`storage.s3_attempts()`);
- 409 ConditionalRequestConflict (another conditional write on the key is in flight): retried with backoff;
  when it persists, acquire raises LeaseBusy (the jobs exit 75, as for a held lease);
- stores that ignore conditional headers: probed once per output (a scratch object beside the lease) and
  refused with LeaseUnsupported, a ValueError the jobs print as `error: ...`.
Expiry compares the holder's `expires_at` with the reader's clock: hosts' clocks must agree to well under
the TTL (NTP does).
"""
from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import urllib.parse
import uuid

import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from botocore.exceptions import HTTPClientError

from thorax_ray import lease_base, storage
from thorax_ray.lease_base import LeaseLost, LeaseState, LeaseUnsupported, one_line

log = logging.getLogger(__name__)

CONFLICT_RETRY_S = 3.0  # how long a 409 ConditionalRequestConflict is retried before the lease counts as busy

_CLIENTS: dict[tuple, object] = {}
_CLIENTS_GUARD = threading.Lock()
_PROBED: set[tuple] = set()  # (endpoint, bucket, key) of the outputs whose store honours conditional writes


def _s3_client(endpoint: str | None):
    """One botocore client per endpoint and region: one attempt per request (the lease resolves and retries
    its own conditional writes), lease_base.REQUEST_TIMEOUT_S to connect and to read."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    with _CLIENTS_GUARD:
        if (endpoint, region) not in _CLIENTS:
            timeout = lease_base.REQUEST_TIMEOUT_S
            config = Config(connect_timeout=timeout, read_timeout=timeout,
                            retries={"total_max_attempts": 1, "mode": "standard"})
            _CLIENTS[endpoint, region] = botocore.session.get_session().create_client(
                "s3", endpoint_url=endpoint, region_name=region, config=config)
        return _CLIENTS[endpoint, region]


def _labelled(error: BaseException, operation: str, uri: str, tries: int) -> BaseException:
    """`error` with the note the jobs' one-line storage message reads (thorax_ray.storage_errors): operation,
    key and the tries this lease made (its client makes one per call)."""
    error.add_note(f"storage request: {operation} {uri} after {tries} attempts")
    return error


def _without_userinfo(url: str) -> str:
    """An endpoint URL without any `user:password@` in it (never print credentials)."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()


class _Conflicted(OSError):
    """409 ConditionalRequestConflict for longer than CONFLICT_RETRY_S."""


def _classify(error: Exception) -> str:
    """precondition (412) | conflict (409) | missing (404) | unsupported (501) | transient (may succeed if
    tried again; for a write: may have been applied) | fatal."""
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
    if isinstance(error, (BotocoreConnectionError, HTTPClientError, TimeoutError, ConnectionResetError)):
        return "transient"
    return "fatal"


class S3Lease:
    def __init__(self, uri: str, endpoint_url: str | None):
        self.uri = uri
        self.bucket, self.key = uri.split("://", 1)[1].split("/", 1)
        self.endpoint = endpoint_url or storage.endpoint_from_env()
        self.client = _s3_client(self.endpoint)

    def _body(self, lease: LeaseState) -> bytes:
        return json.dumps({**lease.record, "ttl_s": lease.ttl_s, "expires_at": time.time() + lease.ttl_s}).encode()

    @staticmethod
    def _budget(lease: LeaseState) -> float:
        """How long one write is retried: well inside the heartbeat's period (ttl/3)."""
        return min(max(lease.ttl_s / 6, 2.0), 3 * lease_base.REQUEST_TIMEOUT_S)

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

    def _write(self, lease: LeaseState, *, expect: str | None) -> bool:
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

    def _resolve(self, lease: LeaseState, expect: str | None) -> bool | None:
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
        scratch object beside the lease; raises LeaseUnsupported when it ignores either. Each step is retried
        within the storage budget on transient errors."""
        if (self.endpoint, self.bucket, self.key) in _PROBED:
            return
        scratch: list[str] = []  # each create attempt writes a fresh key: a 412 can only mean a store's refusal
        try:
            key = self._probe_step(scratch, {"IfNoneMatch": "*"}, "If-None-Match", expect_refusal=False)
            self._probe_step([key], {"IfNoneMatch": "*"}, "If-None-Match", expect_refusal=True)
            self._probe_step([key], {"IfMatch": '"00000000000000000000000000000000"'}, "If-Match", expect_refusal=True)
        finally:
            for key in scratch:
                self._delete_scratch(key)
        _PROBED.add((self.endpoint, self.bucket, self.key))

    def _delete_scratch(self, key: str) -> None:
        for tries in range(1, storage.s3_attempts() + 1):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
                return
            except Exception as error:
                if _classify(error) != "transient" or tries == storage.s3_attempts():
                    log.warning("%s: could not delete the probe object %s (%s)", self.uri, key, one_line(error))
                    return
                time.sleep(0.05 * tries)

    def _probe_step(self, keys: list[str], condition: dict, header: str, *, expect_refusal: bool) -> str:
        """One conditional PUT of the probe: on `keys[0]` when refusal is expected, else on a new scratch key per
        attempt (appended to `keys`). Returns the key written to."""
        store = f"the store at {_without_userinfo(self.endpoint)}" if self.endpoint else "the store"
        unsupported = LeaseUnsupported(
            f"{self.uri}: {store} does not honour conditional writes ({header} on PUT), so its lease cannot keep "
            "two runs off this output; use AWS S3 or an S3-compatible store with conditional writes, or a "
            "local/shared POSIX path")
        pause, attempts = 0.05, storage.s3_attempts()
        for tries in range(1, attempts + 1):
            if not expect_refusal:
                keys.append(f"{self.key}.probe-{uuid.uuid4().hex[:12]}")
            key = keys[0] if expect_refusal else keys[-1]
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=b"conditional-write probe", **condition)
            except Exception as error:
                kind = _classify(error)
                if kind == "precondition" and expect_refusal:
                    return key
                if kind == "unsupported" or (kind == "fatal" and "NotImplemented" in str(error)):
                    raise unsupported from None
                if kind != "transient" or tries == attempts:
                    raise _labelled(error, "PutObject", f"s3://{self.bucket}/{key}", tries)
                time.sleep(pause * random.uniform(0.5, 1.0))
                pause = min(2 * pause, 1.0)
                continue
            if expect_refusal:
                raise unsupported
            return key
        raise AssertionError("unreachable")

    def try_acquire(self, lease: LeaseState) -> dict | None:
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

    def renew(self, lease: LeaseState) -> None:
        try:
            ours = self._write(lease, expect=lease._etag)
        except _Conflicted as busy:
            raise OSError(f"{self.uri}: renewal not confirmed: {busy}") from None
        if not ours:
            raise LeaseLost(f"{self.uri}: expired and taken over by another run")

    def release(self, lease: LeaseState) -> None:
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
                if kind == "unsupported":
                    break  # conditional deletes refused: read back below
                if kind != "transient":  # never an unconditional delete here: it could be a successor's lease
                    log.warning("%s: the lease was not released (%s); it expires %g s after its last renewal",
                                self.uri, one_line(error), lease.ttl_s)
                    return
                if self._spent(started, self._budget(lease), pause, tries):
                    raise _labelled(error, "DeleteObject", self.uri, tries)
            time.sleep(pause)
            pause = min(2 * pause, 1.0)
        found = self._read()
        if found is not None and found[0].get("token") == lease.token and found[1] == lease._etag:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)
