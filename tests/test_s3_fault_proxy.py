"""The fault proxy itself (tests/s3_fault_proxy.py): what reaches the store, what the client gets back."""
from __future__ import annotations

import http.client
import http.server
import threading

import pytest

from tests.s3_fault_proxy import FAILED_AFTER_APPLY, FORWARDED, SLOWDOWN, FaultProxy, operation

BIG = bytes(range(256)) * 4096  # 1 MiB


class _Recorder(http.server.BaseHTTPRequestHandler):
    """An upstream that records each request and answers GETs with 1 MiB."""

    protocol_version = "HTTP/1.1"
    seen: list = []

    def log_message(self, *_):
        pass

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_PUT(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append((self.command, self.path, dict(self.headers), body))
        self._answer(b"")

    def do_GET(self):
        type(self).seen.append((self.command, self.path, dict(self.headers), b""))
        self._answer(BIG)


@pytest.fixture
def upstream():
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_chunked_body_is_forwarded_whole_with_the_clients_host(upstream):
    with FaultProxy(upstream) as proxy:
        port = int(proxy.endpoint.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("PUT", "/bucket/key", body=iter([b"ab", b"cde", BIG]), encode_chunked=True,
                           headers={"Host": "signed-host.example:1234", "x-amz-date": "20261205T000000Z"})
        assert connection.getresponse().read() == b""
        connection.request("GET", "/bucket/key")  # the same kept-alive connection
        response = connection.getresponse()
        assert response.status == 200 and response.read() == BIG
    (method, path, headers, body), _ = _Recorder.seen
    assert (method, path, body) == ("PUT", "/bucket/key", b"abcde" + BIG)
    assert headers["Host"] == "signed-host.example:1234" and headers["x-amz-date"] == "20261205T000000Z"
    assert "Transfer-Encoding" not in headers and headers["Content-Length"] == str(len(body))


def test_shares_are_seeded_and_a_500_comes_after_the_store_applied_it(upstream):
    def run() -> tuple[dict, int]:
        _Recorder.seen = []
        with FaultProxy(upstream, slowdown=0.3, fail_after_apply=0.3, seed=5) as proxy:
            port = int(proxy.endpoint.rsplit(":", 1)[1])
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            statuses = []
            for i in range(60):
                connection.request("PUT", f"/bucket/k{i}", body=b"x")
                response = connection.getresponse()
                statuses.append((response.status, response.read()))
            faults = proxy.faults()["PutObject"]
        assert [s for s, _ in statuses].count(503) == faults[SLOWDOWN]
        assert [s for s, _ in statuses].count(500) == faults[FAILED_AFTER_APPLY]
        assert all(b"<Code>SlowDown</Code>" in body for s, body in statuses if s == 503)
        assert all(b"<Code>InternalError</Code>" in body for s, body in statuses if s == 500)
        return faults, len(_Recorder.seen)

    faults, applied = run()
    assert faults[SLOWDOWN] > 5 and faults[FAILED_AFTER_APPLY] > 5
    assert applied == faults[FORWARDED] + faults[FAILED_AFTER_APPLY]  # a SlowDown never reaches the store
    assert run() == (faults, applied)  # the same seed, the same faults


@pytest.mark.parametrize("method, path, query, headers, expected", [
    ("HEAD", "/b/k", "", {}, "HeadObject"), ("HEAD", "/b", "", {}, "HeadBucket"),
    ("GET", "/b", "list-type=2&prefix=x", {}, "ListObjectsV2"), ("GET", "/b/k", "", {}, "GetObject"),
    ("PUT", "/b/k", "partNumber=1&uploadId=u", {}, "UploadPart"),
    ("PUT", "/b/k", "", {"x-amz-copy-source": "b/j"}, "CopyObject"), ("PUT", "/b/k", "", {}, "PutObject"),
    ("POST", "/b/k", "uploads", {}, "CreateMultipartUpload"), ("POST", "/b/k", "uploadId=u", {}, "CompleteMultipartUpload"),
    ("POST", "/b", "delete", {}, "DeleteObjects"), ("DELETE", "/b/k", "", {}, "DeleteObject"),
])
def test_operations_are_named_as_s3_names_them(method, path, query, headers, expected):
    assert operation(method, path, query, headers) == expected
