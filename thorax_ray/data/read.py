"""Reading bytes from storage with bounded retries and exponential backoff for transient errors."""
from __future__ import annotations

import logging
import time

import fsspec

log = logging.getLogger(__name__)


class ReadError(OSError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def read_bytes(fs: fsspec.AbstractFileSystem, path: str, *, attempts: int = 3, backoff_s: float = 0.2) -> bytes:
    """Reads a whole object; a missing one fails at once, transient errors are retried `attempts` times."""
    for attempt in range(1, attempts + 1):
        try:
            return fs.cat_file(path)
        except FileNotFoundError:
            raise ReadError("missing", path) from None
        except (OSError, TimeoutError, ConnectionError) as error:  # botocore/aiohttp errors surface as OSError
            if attempt == attempts:
                raise ReadError("read_error", f"{type(error).__name__} after {attempts} attempts: {error}"[:300]) from None
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning("read of %s failed (%s), retry %d/%d in %.1fs", path, type(error).__name__, attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
