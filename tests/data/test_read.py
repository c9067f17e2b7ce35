"""read_bytes: one call, its failure as a quarantine reason; retries are the S3 client's (storage)."""
from __future__ import annotations

import http.server
import socketserver
import threading

import boto3
import pytest
from botocore.retries.standard import ExponentialBackoff

from tests.data.fakes import FlakyFileSystem
from thorax_ray import storage
from thorax_ray.data.quarantine import QUARANTINE_REASONS
from thorax_ray.data.read import ReadError, read_bytes


def sent_requests(fs) -> list[str]:
    """Every HTTP request the filesystem's botocore client sends from now on (retries included)."""
    fs.connect()
    sent = []
    fs.s3.meta.events.register("before-send.s3", lambda request, **_: sent.append((request.method, request.url)))
    return sent


def test_reads_an_object(s3_bucket, s3_server):
    bucket = s3_bucket.removeprefix("s3://")
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").put_object(
        Bucket=bucket, Key="a.png", Body=b"pixels")
    fs, path = storage.filesystem(f"{s3_bucket}/a.png")
    assert read_bytes(fs, path) == b"pixels"


def test_a_missing_key_is_missing_at_once(s3_bucket):
    fs, path = storage.filesystem(f"{s3_bucket}/nowhere.png")
    sent = sent_requests(fs)
    with pytest.raises(ReadError) as raised:
        read_bytes(fs, path)
    assert raised.value.reason == "missing" and raised.value.detail == path
    assert sent and len(sent) == len(set(sent))  # a 404 (and s3fs's look for a folder of that name) is not retried


class _FailingStore(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint whose objects exist (HEAD) but whose every GET is a 500 InternalError."""

    protocol_version = "HTTP/1.1"
    gets = 0
    body = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError</Code><Message>boom</Message></Error>"

    def log_message(self, *_):
        pass

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "10")
        self.send_header("ETag", '"e"')
        self.end_headers()

    def do_GET(self):
        type(self).gets += 1
        self.send_response(500)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


@pytest.fixture
def failing_store(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)  # no waits in tests
    _FailingStore.gets = 0
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _FailingStore)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_failing_store_is_tried_a_bounded_number_of_times(failing_store):
    fs, path = storage.filesystem("s3://bucket/a.png", endpoint_url=failing_store)
    with pytest.raises(ReadError) as raised:
        read_bytes(fs, path)
    assert raised.value.reason == "read_error"
    assert "boom" in raised.value.detail and len(raised.value.detail) <= 300
    assert _FailingStore.gets == storage.S3_ATTEMPTS_PER_REQUEST  # botocore's tries, nothing on top


def test_a_transient_local_error_is_one_read_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"pixels")
    markers = tmp_path / "markers"
    markers.mkdir()
    fs = FlakyFileSystem(str(markers), failures=1)
    with pytest.raises(ReadError) as raised:
        read_bytes(fs, str(tmp_path / "a.png"))
    assert raised.value.reason == "read_error"
    assert raised.value.detail.startswith("ConnectionError: injected transient failure #1")
    assert (markers / "a.png.failures").read_text() == "1"  # one call, no retry loop here
    assert read_bytes(fs, str(tmp_path / "a.png")) == b"pixels"


def test_errors_that_are_not_oserrors_are_read_errors_too():
    class Broken:
        def cat_file(self, path):
            raise RuntimeError("client payload cut off")  # aiohttp/botocore errors are not OSErrors

    with pytest.raises(ReadError) as raised:
        read_bytes(Broken(), "bucket/a.png")
    assert raised.value.reason == "read_error" and raised.value.detail == "RuntimeError: client payload cut off"


def test_the_reasons_are_in_the_quarantine_vocabulary():
    assert {"missing", "read_error"} <= set(QUARANTINE_REASONS)
