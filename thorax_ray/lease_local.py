"""The lease on local and shared POSIX file systems (thorax_ray.lease picks it for a path that is not s3://).

Every change of the lease file (create, renew, take over, release, the fence) happens while holding an exclusive
`flock` on that file (plus a per-process lock, as NFS's emulation of flock does not separate threads), so two
successors of an expired lease cannot both take it over. The record names the holder; the file's modification
time is the heartbeat (renewal sets it to now). A file system without locks is refused with LeaseUnsupported; a
lock that stays taken for LOCAL_LOCK_WAIT_S counts as busy (LeaseBusy). On NFS, flock maps to NFS byte-range
locks (Linux >= 2.6.12): mount without `nolock`/`local_lock`.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from thorax_ray import storage
from thorax_ray.lease_base import LeaseBusy, LeaseLost, LeaseState, LeaseUnsupported

LOCAL_LOCK_WAIT_S = 10.0  # the longest wait for the local lease file's flock (held for microseconds)

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _thread_lock(path: str) -> threading.Lock:
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(path, threading.Lock())


class LocalLease:
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

    def try_acquire(self, lease: LeaseState) -> dict | None:
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

    def renew(self, lease: LeaseState) -> None:
        with self._exclusive(create=False) as descriptor:
            found = self._read(descriptor) if descriptor is not None else None
            if found is None or found[0].get("token") != lease.token:
                raise LeaseLost(f"{self.uri}: expired and taken over by another run")
            os.utime(descriptor)

    def release(self, lease: LeaseState) -> None:
        with self._exclusive(create=False) as descriptor:
            found = self._read(descriptor) if descriptor is not None else None
            if found is not None and found[0].get("token") == lease.token:
                os.unlink(self.path)
