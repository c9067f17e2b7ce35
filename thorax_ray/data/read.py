"""Reading one image's bytes from storage, its failure as a quarantine reason.

Transient errors are retried below this module, once for every S3 request, by the client that
`storage.filesystem` configures (`storage.S3_ATTEMPTS_PER_REQUEST`); `read_bytes` itself calls once."""
from __future__ import annotations

import logging

import fsspec

log = logging.getLogger(__name__)


class ReadError(OSError):
    """A read that failed: `reason` is "missing" or "read_error" (thorax_ray.data.quarantine)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def read_bytes(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
    """Reads a whole object with one call: a missing one is ReadError("missing"), any other failure
    (what is left after the client's own retries) ReadError("read_error") with the error's type and text."""
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise ReadError("missing", path) from None
    except Exception as error:  # noqa: BLE001 - s3fs lets botocore and aiohttp errors through, not only OSError
        detail = f"{type(error).__name__}: {error}"[:300]
        log.warning("read of %s failed: %s", path, detail)
        raise ReadError("read_error", detail) from None
