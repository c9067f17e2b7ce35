"""A storage request that failed for good, as one line and an exit code.

Every S3 client retries a failed request within one budget (`storage.s3_attempts()`); what still fails after
it reaches the job's `run_main` (thorax_ray.cli) as one of: a botocore `ClientError` (or s3fs's OSError
translation of one, labelled with its operation and key by a note `storage request: <Operation> s3://bucket/key`
that `thorax_ray.s3` adds; a caller that retries a single-attempt client itself, as thorax_ray.lease does,
appends ` after N attempts` to its note), a pyarrow OSError (Ray Train's
and Tune's storage: `When getting information for key 'K' in bucket 'B': AWS Error UNKNOWN (HTTP status 500)
during HeadObject operation: ...`), or any of these inside the errors Ray raises on the driver for a failed
task, actor or training run (found in their chain, or in the traceback text Ray carries). `storage_failure`
turns it into

    error: storage: HeadObject s3://bucket/runs/x/.validate_storage_marker failed after 5 attempts: HTTP 500 (No response body.)

with exit code 75 (EX_TEMPFAIL: the store answered 5xx/throttling/timeouts; the same command later may
succeed) or 1 (the store refused: 403 and other 4xx). A missing object stays a FileNotFoundError (exit 2).
The line names the operation and the key, never credentials or request headers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from thorax_ray import exit_codes
from thorax_ray.storage import s3_attempts

TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                   "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequests"}
TRANSIENT_ARROW = {"SLOW_DOWN", "THROTTLING", "NETWORK_CONNECTION", "SERVICE_UNAVAILABLE", "INTERNAL_FAILURE",
                   "REQUEST_TIMEOUT", "REQUEST_TIME_TOO_SKEWED"}
TRANSIENT_BOTOCORE = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
                      "ConnectionError"}

_NOTE = re.compile(r"storage request: (?P<op>\w+) (?P<uri>s3://[^\s'\"]*)(?: after (?P<attempts>\d+) attempts)?")
_ARROW = re.compile(r"When (?P<what>[^\n]*?): AWS Error (?P<kind>\w+)(?: \(HTTP status (?P<status>\d+)\))? "
                    r"during (?P<op>\w+) operation: (?P<message>[^\n]*)")
_ARROW_KEY = re.compile(r"key '(?P<key>[^']*)' in bucket '(?P<bucket>[^']*)'|bucket '(?P<only>[^']*)'")
_BOTO = re.compile(r"An error occurred \((?P<code>[^)]*)\) when calling the (?P<op>\w+) operation"
                   r"(?: \(reached max retries: (?P<retries>\d+)\))?: (?P<message>[^\n]*)")
MAX_REASON = 200


@dataclass(frozen=True)
class StorageFailure:
    operation: str  # S3's name of the request: HeadObject, PutObject, ListObjectsV2, ...
    uri: str | None  # s3://bucket/key (or the listed prefix) when known
    reason: str  # the status and the store's message
    attempts: int | None  # tries made (botocore reports them; pyarrow's are its budget)
    transient: bool

    def line(self) -> str:
        where = f" {self.uri}" if self.uri else ""
        tries = f" after {self.attempts} attempts" if self.transient and self.attempts else ""
        return f"error: storage: {self.operation}{where} failed{tries}: {self.reason}"

    @property
    def exit_code(self) -> int:
        return exit_codes.TEMPFAIL if self.transient else exit_codes.REFUSED


def _linked(error: BaseException):
    """The errors an error carries: its cause and context, and those of Ray's wrappers (a task's `cause`, a
    training run's controller and worker failures)."""
    for name in ("cause", "controller_failure", "__cause__", "__context__"):
        linked = getattr(error, name, None)
        if isinstance(linked, BaseException):
            yield linked
    failures = getattr(error, "worker_failures", None)
    if isinstance(failures, dict):
        yield from (f for f in failures.values() if isinstance(f, BaseException))


def chain(error: BaseException, limit: int = 32) -> list[BaseException]:
    seen, found, todo = set(), [], [error]
    while todo and len(found) < limit:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        todo.extend(_linked(current))
    return found


def _text(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception:  # noqa: BLE001 - a wrapper whose __str__ fails still has notes to read
        text = ""
    return "\n".join([text, *map(str, getattr(error, "__notes__", ()))])


def _reason(status, code: str | None, message: str) -> str:
    parts = [f"HTTP {status}" if status else "", code if code and code != str(status) else ""]
    head = " ".join(p for p in parts if p) or "no response"
    message = " ".join(str(message).split())
    reason = f"{head} ({message})" if message and message not in head else head
    return reason if len(reason) <= MAX_REASON else reason[:MAX_REASON - 3] + "..."


def _transient(status, code: str | None) -> bool:
    return (status is not None and (int(status) >= 500 or int(status) in (408, 429))) or code in TRANSIENT_CODES


def _from_client_error(error, note, budget: int) -> StorageFailure:
    response = error.response
    meta, details = response.get("ResponseMetadata", {}), response.get("Error", {})
    status, code = meta.get("HTTPStatusCode"), details.get("Code")
    message = details.get("Message") or ""
    attempts = meta.get("RetryAttempts", 0) + 1 if "RetryAttempts" in meta else budget
    if note and note.group("attempts"):  # a caller that retries on its own says how often it tried
        attempts = int(note.group("attempts"))
    return StorageFailure(operation=error.operation_name, uri=note.group("uri") if note else None,
                          reason=_reason(status, code, message), attempts=attempts,
                          transient=_transient(status, code))


def _from_arrow(match, budget: int) -> StorageFailure:
    status, kind = match.group("status"), match.group("kind")
    place = _ARROW_KEY.search(match.group("what"))
    uri = None
    if place and place.group("bucket") is not None:
        uri = f"s3://{place.group('bucket')}/{place.group('key')}".rstrip("/")
    elif place:
        uri = f"s3://{place.group('only')}"
    transient = _transient(status, None) or kind in TRANSIENT_ARROW
    return StorageFailure(operation=match.group("op"), uri=uri,
                          reason=_reason(status, None if kind == "UNKNOWN" else kind, match.group("message")),
                          attempts=budget, transient=transient)


def storage_failure(error: BaseException, *, budget: int | None = None) -> StorageFailure | None:
    """The storage request behind `error` (anywhere in its chain), or None when storage is not the cause.
    `budget`: the tries a client makes (default: `storage.s3_attempts()`), stated where the client does
    not report its own count."""
    budget = budget or s3_attempts()
    errors = chain(error)
    text = "\n".join(_text(e) for e in errors)
    note = _NOTE.search(text)
    for current in errors:
        if isinstance(getattr(current, "response", None), dict) and getattr(current, "operation_name", None):
            return _from_client_error(current, note, budget)
    arrow = _ARROW.search(text)
    if arrow:
        return _from_arrow(arrow, budget)
    boto = _BOTO.search(text)
    if boto:
        retries = boto.group("retries")
        code = boto.group("code")
        status = int(code) if code.isdigit() else None
        return StorageFailure(operation=boto.group("op"), uri=note.group("uri") if note else None,
                              reason=_reason(status, code, boto.group("message")),
                              attempts=int(retries) + 1 if retries else budget, transient=_transient(status, code))
    for current in errors:
        if note and type(current).__name__ in TRANSIENT_BOTOCORE:
            return StorageFailure(operation=note.group("op"), uri=note.group("uri"),
                                  reason=_reason(None, type(current).__name__, str(current)), attempts=budget,
                                  transient=True)
    return None
