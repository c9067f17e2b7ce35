"""The lease's windows, each with a fault injected: on the moto server through a small proxy that changes what
the client and the server see (answers lost after the server applied a PUT, 409 conflicts, a store that ignores
conditional headers, renewals that fail), and locally (successors racing to take over an expired lease)."""
from __future__ import annotations

import http.client
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest

from thorax_ray.data.staged import staged_run
from thorax_ray.lease import LeaseBusy, LeaseLost, LeaseUnsupported, acquire_lease

CONDITIONAL = ("if-match", "if-none-match")
CONFLICT_409 = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ConditionalRequestConflict</Code>'
                b"<Message>A conflicting conditional operation is currently in progress against this resource."
                b"</Message></Error>")
ANSWERS = {"409": CONFLICT_409, "503": b"<Error><Code>SlowDown</Code></Error>",
           "501": b"<Error><Code>NotImplemented</Code><Message>not supported</Message></Error>"}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def conditional(self) -> str | None:
        return next((name for name in CONDITIONAL if name in self.headers), None)

    def carries(self, token: str) -> bool:
        return token.encode() in self.body


@dataclass
class FaultProxy:
    """An HTTP proxy in front of the moto server. `fault(request)` names what happens to each request:
    None (forwarded as is), "strip" (forwarded without its conditional headers), "409" (answered
    ConditionalRequestConflict, not forwarded), "503" (answered SlowDown), "501" (answered NotImplemented),
    "drop" (forwarded, then the connection closed without an answer: applied, but the client never learns it)
    or "500-after" (forwarded, then answered InternalError), "hang" (forwarded, then no answer for `hang_s`: the
    client times out)."""

    upstream: str
    fault: Callable[[Request], str | None] = lambda request: None
    seen: list[tuple[Request, str | None]] = field(default_factory=list)
    endpoint: str = ""
    hang_s: float = 2.0

    def __post_init__(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                  self.rfile.read(length))
                action = proxy.fault(request)
                proxy.seen.append((request, action))
                if action in ANSWERS:
                    return self._answer(int(action), {"Content-Type": "application/xml"}, ANSWERS[action])
                headers = {k: v for k, v in self.headers.items()
                           if not (action == "strip" and k.lower() in CONDITIONAL)}
                status, reply_headers, body = proxy._forward(request, headers)
                if action == "hang":
                    time.sleep(proxy.hang_s)
                if action in ("drop", "hang"):
                    self.close_connection = True
                    return None
                if action == "500-after":
                    return self._answer(500, {"Content-Type": "application/xml"},
                                        b"<Error><Code>InternalError</Code></Error>")
                return self._answer(status, reply_headers, body)

            def _answer(self, status, headers, body):
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _forward(self, request: Request, headers: dict[str, str]):
        host, port = self.upstream.split("//", 1)[1].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request(request.method, request.path, body=request.body or None, headers=headers)
            reply = connection.getresponse()
            return reply.status, dict(reply.getheaders()), reply.read()
        finally:
            connection.close()

    def requests(self, method: str = "PUT", *, key: str = "_lock.json") -> list[tuple[Request, str | None]]:
        return [(r, a) for r, a in self.seen if r.method == method and r.path.split("?")[0].endswith(key)]

    def close(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def proxy(s3_server):
    proxy = FaultProxy(s3_server)
    yield proxy
    proxy.close()


@pytest.fixture
def lock_uri(s3_bucket):
    return f"{s3_bucket}/out/_lock.json"


def _on_lock_puts(action: str, *, condition: str | None = None, token: str | None = None, times: int = 1):
    """A fault for the first `times` PUTs of the lease object (with `condition`, carrying `token` if given)."""
    left = [times]

    def fault(request: Request) -> str | None:
        if request.method != "PUT" or not request.path.split("?")[0].endswith("/out/_lock.json"):
            return None
        if condition is not None and request.conditional != condition:
            return None
        if token is not None and not request.carries(token):
            return None
        if left[0] <= 0:
            return None
        left[0] -= 1
        return action

    return fault


# -- ambiguous writes: the server applied the PUT, the client never heard so ---------------------------------------


@pytest.fixture
def short_timeouts(monkeypatch):
    """The lease's requests time out after 1 s (fresh clients)."""
    from thorax_ray import lease_base, lease_s3

    monkeypatch.setattr(lease_base, "REQUEST_TIMEOUT_S", 1.0)
    monkeypatch.setattr(lease_s3, "_CLIENTS", {})


@pytest.mark.parametrize("fault", ["drop", "500-after", "hang"])
def test_a_renewal_applied_but_unanswered_keeps_the_lease(proxy, lock_uri, fault, request):
    """The server applies the renewal; the client sees a dropped connection, a 500 or a read timeout. Before:
    the client retried the If-Match PUT on the ETag it had, got 412 (its own write had changed it) and lost
    its own lease (`LeaseLost` hours into a run). After: the lease is read back, the token is ours, its ETag
    is adopted and the next renewal and the fence succeed."""
    if fault == "hang":
        request.getfixturevalue("short_timeouts")
        proxy.hang_s = 3.0
    holder = acquire_lease(lock_uri, ttl_s=60, keep_alive=False, endpoint_url=proxy.endpoint)
    proxy.fault = _on_lock_puts(fault, condition="if-match", token=holder.token)
    holder.renew()
    assert [a for _, a in proxy.requests()].count(fault) == 1  # the fault did happen
    holder.renew()
    holder.fence()
    with pytest.raises(LeaseBusy):
        acquire_lease(lock_uri, ttl_s=60)
    holder.release()
    acquire_lease(lock_uri, ttl_s=60).release()  # released: nothing of ours is left behind


@pytest.mark.parametrize("fault", ["drop", "500-after"])
def test_an_acquire_applied_but_unanswered_is_our_own_lease(proxy, lock_uri, fault):
    """Before: the retried If-None-Match PUT got 412 and acquire reported its own new lease as another run's
    (LeaseBusy naming ourselves). After: the record read back carries our token, so the lease is ours."""
    proxy.fault = _on_lock_puts(fault, condition="if-none-match")
    holder = acquire_lease(lock_uri, ttl_s=60, keep_alive=False, about={"run_id": "me"}, endpoint_url=proxy.endpoint)
    assert [a for _, a in proxy.requests()].count(fault) == 1
    holder.fence()
    with pytest.raises(LeaseBusy, match="run_id me"):
        acquire_lease(lock_uri, ttl_s=60)
    holder.release()


def test_a_takeover_applied_but_unanswered_is_our_lease(proxy, lock_uri):
    dead = acquire_lease(lock_uri, ttl_s=1.0, keep_alive=False)
    time.sleep(1.3)
    proxy.fault = _on_lock_puts("drop", condition="if-match")
    successor = acquire_lease(lock_uri, ttl_s=60, keep_alive=False, endpoint_url=proxy.endpoint)
    assert [a for _, a in proxy.requests()].count("drop") == 1
    successor.fence()
    with pytest.raises(LeaseLost):
        dead.fence()
    successor.release()


# -- renewals that fail, then a successor: the first holder must not commit -----------------------------------------


def test_after_failed_renewals_and_a_takeover_the_first_holder_does_not_commit(proxy, s3_bucket):
    """The holder's renewals fail (503) until its lease expires and a successor takes it over; the holder then
    reaches its commit before another renewal. Before: `check()` read a flag no failed renewal had set, so
    both runs committed. After: the commit is fenced by a conditional write, which fails (412): LeaseLost and
    no commit record."""
    out = f"{s3_bucket}/out"
    failing = threading.Event()
    with staged_run(out, f"{out}/_staging/a", ttl_s=1.5, endpoint_url=proxy.endpoint) as first:
        token = first.lease.token
        proxy.fault = lambda r: "503" if failing.is_set() and r.method == "PUT" and r.carries(token) else None
        failing.set()
        time.sleep(2.0)  # renewals at 0.5, 1.0, 1.5 s fail; the lease expires at 1.5 s
        with staged_run(out, f"{out}/_staging/b", ttl_s=60, wait_s=20, about={"run_id": "b"}) as second:
            failed = [r for r, a in proxy.seen if a == "503"]
            assert failed, "the first holder's renewals should have been tried (and failed) meanwhile"
            failing.clear()
            with pytest.raises(LeaseLost):
                first.commit("_commits/a.json", {"run": "a"})
            assert first.committed is None
            second.commit("_commits/b.json", {"run": "b"})
    from thorax_ray import storage
    fs, path = storage.filesystem(out)
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{path}/_commits")) == ["b.json"]


def test_after_failed_local_renewals_and_a_takeover_the_first_holder_does_not_commit(tmp_path, monkeypatch, caplog):
    """Locally: the holder's renewals raise OSError (a storage hiccup) until a successor takes the lease over.
    Each failure is logged (not swallowed); the holder's commit is fenced and fails; only the successor's
    commit record exists."""
    from thorax_ray import lease_local

    out = str(tmp_path / "out")
    failing, renew = threading.Event(), lease_local.LocalLease.renew

    def flaky_renew(self, lease):
        if failing.is_set() and lease.token == token:
            raise OSError("injected: the file server did not answer")
        return renew(self, lease)

    monkeypatch.setattr(lease_local.LocalLease, "renew", flaky_renew)
    with caplog.at_level(logging.WARNING, logger="thorax_ray.lease"):
        with staged_run(out, f"{out}/_staging/a", ttl_s=0.6) as first:
            token = first.lease.token
            failing.set()
            time.sleep(0.9)
            with staged_run(out, f"{out}/_staging/b", ttl_s=60, about={"run_id": "b"}) as second:
                failing.clear()
                with pytest.raises(LeaseLost):
                    first.commit("_commits/a.json", {"run": "a"})
                second.commit("_commits/b.json", {"run": "b"})
    assert sorted(os.listdir(f"{out}/_commits")) == ["b.json"]
    assert any("renewal failed (1 in a row)" in r.getMessage() for r in caplog.records), caplog.text


def test_the_fence_is_a_conditional_write(proxy, lock_uri):
    """Before: `check()` read a local flag and sent nothing. After: one If-Match PUT on our ETag, just then."""
    holder = acquire_lease(lock_uri, ttl_s=60, keep_alive=False, endpoint_url=proxy.endpoint)
    before, etag = len(proxy.requests()), holder._etag
    holder.fence()
    fenced = [r for r, _ in proxy.requests()[before:]]
    assert [r.conditional for r in fenced] == ["if-match"] and fenced[0].headers["if-match"] == etag
    holder.release()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_holder_that_was_taken_over_fails_its_fence_without_renewing_first(where, tmp_path, request):
    """Before: `check()` raised only once a renewal had seen the takeover (a flag); called first, it passed."""
    uri = str(tmp_path / "out" / "_lock.json") if where == "local" else request.getfixturevalue("lock_uri")
    dead = acquire_lease(uri, ttl_s=1.0, keep_alive=False)
    time.sleep(1.3)
    successor = acquire_lease(uri, ttl_s=60, keep_alive=False)
    with pytest.raises(LeaseLost):
        dead.fence()
    successor.fence()
    successor.release()


# -- 409 ConditionalRequestConflict ---------------------------------------------------------------------------------


def test_a_409_conflict_is_retried_as_busy(proxy, lock_uri):
    """Before: 409 ended acquire with an OSError (exit 1). After: it is retried with backoff."""
    proxy.fault = _on_lock_puts("409", times=2)
    holder = acquire_lease(lock_uri, ttl_s=60, keep_alive=False, endpoint_url=proxy.endpoint)
    assert [a for _, a in proxy.requests()].count("409") == 2
    holder.fence()
    holder.release()


def test_a_409_that_persists_is_lease_busy(proxy, lock_uri):
    """Busy for good: LeaseBusy, which the jobs turn into exit 75 (EX_TEMPFAIL), like a held lease."""
    proxy.fault = _on_lock_puts("409", times=10_000)
    started = time.monotonic()
    with pytest.raises(LeaseBusy, match="409"):
        acquire_lease(lock_uri, ttl_s=60, keep_alive=False, endpoint_url=proxy.endpoint)
    assert time.monotonic() - started < 20


def test_a_409_on_renewal_is_retried(proxy, lock_uri):
    holder = acquire_lease(lock_uri, ttl_s=60, keep_alive=False, endpoint_url=proxy.endpoint)
    proxy.fault = _on_lock_puts("409", condition="if-match", times=2)
    holder.renew()
    holder.fence()
    holder.release()


# -- a store that ignores conditional headers -----------------------------------------------------------------------


def test_a_store_that_ignores_conditional_writes_is_refused_in_one_line(proxy, lock_uri):
    """Before: two writers both "held" the lease on such a store, silently. After: the store is probed once per
    output and refused with LeaseUnsupported (a ValueError: the jobs print `error: ...` and exit 2)."""
    proxy.fault = lambda request: "strip"
    with pytest.raises(LeaseUnsupported) as refused:
        acquire_lease(lock_uri, ttl_s=60, keep_alive=False, endpoint_url=proxy.endpoint)
    message = str(refused.value)
    assert isinstance(refused.value, ValueError)
    assert "\n" not in message and "conditional" in message and lock_uri in message
    assert "testing" not in message  # the test credentials never appear


def test_the_store_is_probed_once_per_output(proxy, s3_bucket):
    def probes():
        return [r for r, _ in proxy.seen if r.method == "PUT" and ".probe-" in r.path]

    def take_and_release(folder):
        acquire_lease(f"{s3_bucket}/{folder}/_lock.json", ttl_s=60, keep_alive=False,
                      endpoint_url=proxy.endpoint).release()

    take_and_release("one")
    take_and_release("one")
    once = len(probes())
    assert once > 0
    take_and_release("two")
    assert len(probes()) == 2 * once
    listed = [r for r, _ in proxy.seen if r.method == "GET" and "list-type" in r.path]
    assert not listed


def test_a_store_that_refuses_conditional_deletes_still_gets_the_lease_released(proxy, lock_uri):
    """Release falls back to reading the lease back and deleting it only if it is still the version we wrote."""
    def fault(request):
        refused = request.method == "DELETE" and request.conditional and request.path.endswith("_lock.json")
        return "501" if refused else None

    proxy.fault = fault
    acquire_lease(lock_uri, ttl_s=60, keep_alive=False, endpoint_url=proxy.endpoint).release()
    assert [a for r, a in proxy.seen if r.method == "DELETE"].count("501") == 1
    acquire_lease(lock_uri, ttl_s=60, keep_alive=False).release()  # not held any more


def test_a_refused_conditional_delete_other_than_not_implemented_never_deletes_unconditionally(proxy, lock_uri):
    """Only a store without conditional deletes (501) gets the read-back delete. Before, any refusal (here 409)
    fell through to it: read back, then an unconditional DELETE, which deletes a successor's lease when one took
    over in between. Now the lease is left to expire."""
    def fault(request):
        return "409" if request.method == "DELETE" and request.conditional else None

    proxy.fault = fault
    acquire_lease(lock_uri, ttl_s=60, keep_alive=False, endpoint_url=proxy.endpoint).release()
    deletes = [r for r, _ in proxy.seen if r.method == "DELETE" and r.path.endswith("_lock.json")]
    assert deletes and all(r.conditional for r in deletes)


# -- local successors racing ----------------------------------------------------------------------------------------


def test_two_local_successors_of_an_expired_lease_never_both_take_over(tmp_path):
    """Before: a successor renamed the expired file away, and a slower one could then rename away the new
    holder's file too (both held it). After: every change happens under an exclusive lock, so one wins."""
    uri = str(tmp_path / "out" / "_lock.json")
    for round_ in range(150):
        expired = acquire_lease(uri, ttl_s=0.01, keep_alive=False)
        time.sleep(0.02)
        barrier, winners, lock = threading.Barrier(3), [], threading.Lock()

        def take():
            barrier.wait()
            try:
                lease = acquire_lease(uri, ttl_s=60, keep_alive=False)
            except LeaseBusy:
                return
            with lock:
                winners.append(lease)

        threads = [threading.Thread(target=take) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        held = [w for w in winners if _still_holds(w)]
        assert len(winners) == 1, f"round {round_}: {len(winners)} successors took over ({len(held)} still hold)"
        with pytest.raises(LeaseLost):
            expired.fence()
        winners[0].release()


def test_a_local_file_lock_that_stays_taken_is_reported_not_waited_on_forever(tmp_path, monkeypatch):
    """A stuck process holding the lease file's flock: acquire gives up after LOCAL_LOCK_WAIT_S with LeaseBusy
    (score exits 75) naming the file."""
    import fcntl

    from thorax_ray import lease_local

    monkeypatch.setattr(lease_local, "LOCAL_LOCK_WAIT_S", 0.3)
    path = tmp_path / "_lock.json"
    path.write_text("")
    with open(path) as stuck:
        fcntl.flock(stuck, fcntl.LOCK_EX)
        with pytest.raises(LeaseBusy, match="_lock.json is busy: its file lock stayed taken"):
            acquire_lease(str(path), keep_alive=False)
    acquire_lease(str(path), keep_alive=False).release()


def test_a_local_file_system_without_locks_is_refused_in_one_line(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(LeaseUnsupported, match="does not support file locks"):
        acquire_lease(str(tmp_path / "_lock.json"), keep_alive=False)


def _still_holds(lease) -> bool:
    try:
        lease.fence()
        return True
    except LeaseLost:
        return False


def test_the_default_ttl_lets_a_crashed_holder_block_the_next_run_for_about_a_minute(tmp_path):
    """Before: 600 s. After: 60 s, renewed every 20 s by the heartbeat."""
    from thorax_ray import lease as lease_module

    holder = acquire_lease(str(tmp_path / "_lock.json"), keep_alive=False)
    assert holder.ttl_s <= 60
    assert lease_module.DEFAULT_TTL_S <= 60
    record = json.loads((tmp_path / "_lock.json").read_text())
    assert record["ttl_s"] == holder.ttl_s
    holder.release()


# -- what a job prints ----------------------------------------------------------------------------------------------


def _job_exit(capsys, uri: str, endpoint: str) -> tuple[int, str]:
    from thorax_ray.cli import run_main

    def main(argv):
        acquire_lease(uri, ttl_s=60, keep_alive=False, endpoint_url=endpoint).release()
        return 0

    with pytest.raises(SystemExit) as exit_:
        run_main(main, [])
    return exit_.value.code, capsys.readouterr().err.strip()


def test_a_job_on_a_store_without_conditional_writes_ends_with_one_error_line(proxy, lock_uri, capsys):
    proxy.fault = lambda request: "strip"
    code, err = _job_exit(capsys, lock_uri, proxy.endpoint)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and "conditional" in err


def test_a_lease_write_that_fails_past_the_retry_budget_ends_a_job_with_one_line_naming_the_key(proxy, lock_uri,
                                                                                               capsys):
    """503 on every PUT of the lease: the jobs' storage line (operation, key, tries) and exit 75."""
    proxy.fault = _on_lock_puts("503", times=10_000)
    code, err = _job_exit(capsys, lock_uri, proxy.endpoint)
    assert code == 75 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: storage: PutObject {lock_uri} failed after ") and "503" in err


from tests import fault_fixtures  # noqa: E402

fault_proxy = fault_fixtures.fault_proxy


def test_the_conditional_write_probe_survives_a_flaky_store_and_leaves_nothing(fault_proxy, s3_bucket, s3_server):
    """Before: each probe PUT was sent once, so through 10% 503 + 10% 500-after-apply 13 of 30 lease cycles
    failed in the probe. Now each step (and the scratch object's delete) retries transient errors within the
    storage budget, each create on a fresh scratch key (a resend of an applied create would be refused and
    look like a store's refusal)."""
    import boto3

    from thorax_ray import lease_s3

    proxy = fault_proxy(slowdown=0.1, fail_after_apply=0.1, seed=11)
    for output in range(30):
        lease_s3._PROBED.clear()
        uri = f"{s3_bucket}/out{output}/_lock.json"
        with acquire_lease(uri, ttl_s=30, endpoint_url=proxy.endpoint):
            pass
    assert sum(proxy.faults().get("PutObject", {}).values()) > 0  # faults were injected on the probe's PUTs
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    left = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket.split("://")[1]).get("Contents", [])]
    assert not [key for key in left if ".probe-" in key], left
