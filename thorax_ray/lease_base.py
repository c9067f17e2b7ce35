"""What the lease's public face (thorax_ray.lease) and its two backends (thorax_ray.lease_local,
thorax_ray.lease_s3) share: the errors a lease raises and the state of one lease that a backend reads and
writes. Callers import the errors from thorax_ray.lease."""
from __future__ import annotations

import time
from dataclasses import dataclass

REQUEST_TIMEOUT_S = 10.0
"""Connect and read timeout of one lease request to an object store (thorax_ray.lease_s3); releasing a lease
waits at most twice this for its heartbeat's request in flight."""


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
class LeaseState:
    """One lease as a backend sees it (thorax_ray.lease.Lease adds the heartbeat, the fence and the release):
    where it is, the holder's random token, its TTL, the record stored in it and, on S3, the ETag of the
    version this holder wrote last."""
    uri: str
    token: str
    ttl_s: float
    record: dict
    endpoint_url: str | None = None
    _etag: str | None = None


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
