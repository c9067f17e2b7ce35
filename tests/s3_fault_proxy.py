"""A fault-injecting HTTP proxy in front of an S3 server (moto's, in the tests): S3 clients pointed at it see
the server's answers, except that a seeded share of requests is answered `503 SlowDown` without being
forwarded, and another share is forwarded, applied by the server, and then answered `500 InternalError` in
place of the server's reply (the ambiguous case: the write happened, the client was told it failed).

The request is forwarded byte for byte with the client's own Host header, so SigV4 signatures (which sign
the Host) stay what the client signed; an HTTP-level chunked body is re-sent with a Content-Length (the
`aws-chunked` payload inside stays untouched), and a reply body is passed through as it streams.

    with FaultProxy(moto_endpoint, slowdown=0.1, fail_after_apply=0.1, seed=7) as proxy:
        fs, path = storage.filesystem("s3://bucket/key", endpoint_url=proxy.endpoint)
    proxy.faults()  # {"HeadObject": {"forwarded": 3, "slowdown": 1, "failed_after_apply": 0}, ...}
"""
from __future__ import annotations

import collections
import http.client
import http.server
import random
import threading
import urllib.parse

FORWARDED, SLOWDOWN, FAILED_AFTER_APPLY = "forwarded", "slowdown", "failed_after_apply"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "expect"}


def error_body(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>fault-proxy</RequestId></Error>").encode()


def operation(method: str, path: str, query: str, headers) -> str:
    """The S3 operation of a path-style request, as S3's API names it (enough of them for the tests)."""
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    has_key = "/" in path.lstrip("/")
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "GET":
        if has_key:
            return "GetObject"
        return "ListObjectsV2" if params.get("list-type") == ["2"] else "ListObjects"
    if method == "PUT":
        if "partNumber" in params:
            return "UploadPart"
        if headers.get("x-amz-copy-source"):
            return "CopyObject"
        return "PutObject" if has_key else "CreateBucket"
    if method == "POST":
        if "uploads" in params:
            return "CreateMultipartUpload"
        if "uploadId" in params:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in params else "Post"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in params else ("DeleteObject" if has_key else "DeleteBucket")
    return method


class FaultProxy:
    """The proxy; `slowdown` and `fail_after_apply`: shares of requests (0..1), drawn from one RNG seeded
    with `seed`; `always`: operation -> SLOWDOWN or FAILED_AFTER_APPLY for every request of that operation
    (e.g. {"HeadObject": FAILED_AFTER_APPLY}), or only for paths containing one of `always_on` when given;
    `spare`: requests whose path contains one of these strings are always forwarded (counted as such). Counts every request by operation and what happened to it."""

    def __init__(self, upstream: str, *, slowdown: float = 0.0, fail_after_apply: float = 0.0, seed: int = 0,
                 always: dict[str, str] | None = None, always_on: tuple[str, ...] = (), spare: tuple[str, ...] = ()):
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname, parsed.port or 80)
        self.slowdown, self.fail_after_apply = slowdown, fail_after_apply
        self.always = dict(always or {})
        self.always_on, self.spare = tuple(always_on), tuple(spare)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_) -> None:
        self.stop()

    def decide(self, op: str, path: str = "") -> str:
        with self._lock:
            action = None
            if any(text in path for text in self.spare):
                action = FORWARDED
            elif not self.always_on or any(text in path for text in self.always_on):
                action = self.always.get(op)
            if action is None:
                draw = self._rng.random()
                action = (SLOWDOWN if draw < self.slowdown else
                          FAILED_AFTER_APPLY if draw < self.slowdown + self.fail_after_apply else FORWARDED)
            self._counts[op][action] += 1
            return action

    def faults(self) -> dict[str, dict[str, int]]:
        """operation -> {forwarded, slowdown, failed_after_apply} counts so far."""
        with self._lock:
            return {op: {k: counts[k] for k in (FORWARDED, SLOWDOWN, FAILED_AFTER_APPLY)}
                    for op, counts in sorted(self._counts.items())}

    def totals(self) -> dict[str, int]:
        """{requests, forwarded, slowdown, failed_after_apply} over every operation."""
        total = collections.Counter()
        for counts in self.faults().values():
            total.update(counts)
        return {"requests": sum(total.values()), **{k: total[k] for k in (FORWARDED, SLOWDOWN, FAILED_AFTER_APPLY)}}


def _handler(proxy: FaultProxy):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, and `Expect: 100-continue` answered as S3 does

        def log_message(self, *_):
            pass

        def read_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def reply_error(self, status: int, code: str, message: str) -> None:
            body = error_body(code, message)
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def forward(self, body: bytes) -> http.client.HTTPResponse:
            connection = getattr(self, "upstream", None) or http.client.HTTPConnection(*proxy.upstream, timeout=60)
            self.upstream = connection
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))  # Host stays the client's: it is signed
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                return connection.getresponse()
            except (http.client.HTTPException, OSError):  # a kept-alive upstream connection the server closed
                connection.close()
                connection.request(self.command, self.path, body=body, headers=headers)
                return connection.getresponse()

        def relay(self, response: http.client.HTTPResponse) -> None:
            self.send_response(response.status, response.reason)
            length = response.getheader("Content-Length")
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            body = None if length is not None or self.command == "HEAD" else response.read()
            if body is not None or length is not None:
                self.send_header("Content-Length", length if body is None else str(len(body)))
            self.end_headers()
            if body is not None:
                self.wfile.write(body)
            elif self.command != "HEAD":
                while chunk := response.read(1 << 16):
                    self.wfile.write(chunk)
            response.close()

        def handle_one(self) -> None:
            path, _, query = self.path.partition("?")
            op = operation(self.command, path, query, self.headers)
            body = self.read_body()
            action = proxy.decide(op, path)
            if action == SLOWDOWN:
                self.reply_error(503, "SlowDown", "Please reduce your request rate.")
                return
            response = self.forward(body)
            if action == FAILED_AFTER_APPLY:
                response.read()
                response.close()
                self.reply_error(500, "InternalError", "We encountered an internal error. Please try again.")
                return
            self.relay(response)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one

    return Handler
