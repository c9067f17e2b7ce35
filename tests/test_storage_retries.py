"""One retry budget for every S3 client (storage.s3_attempts) and one line when a request outlasts it
(thorax_ray.storage_errors): each client the code builds carries the budget (counted through the fault
proxy: the requests a failing key receives), keeps it when pickled to Ray, and its final failure becomes
`error: storage: <operation> s3://bucket/key failed after N attempts: ...` with exit 75 (1 when refused)."""
from __future__ import annotations

import pickle

import pytest

from tests import fault_fixtures
from tests.s3_fault_proxy import FAILED_AFTER_APPLY, SLOWDOWN
from thorax_ray import exit_codes, storage
from thorax_ray.cli import run_main
from thorax_ray.storage_errors import storage_failure
from thorax_ray.train.train import ray_storage

fault_proxy = fault_fixtures.fault_proxy  # fixture
no_backoff = fault_fixtures.no_backoff  # fixture


def test_the_budget_is_one_setting_read_from_the_environment(monkeypatch):
    monkeypatch.delenv(storage.S3_ATTEMPTS_ENV, raising=False)
    assert storage.s3_attempts() == storage.S3_ATTEMPTS_PER_REQUEST
    monkeypatch.setenv(storage.S3_ATTEMPTS_ENV, "8")
    assert storage.s3_attempts() == 8
    fs, _ = storage.filesystem("s3://bucket/key", endpoint_url="http://127.0.0.1:9")
    assert fs.config_kwargs["retries"] == {"total_max_attempts": 8, "mode": "standard"}
    arrow, path = storage.arrow_filesystem("s3://bucket/runs", endpoint_url="http://127.0.0.1:9")
    assert (arrow.attempts, path) == (8, "bucket/runs")
    for bad in ("0", "x", "-2"):
        monkeypatch.setenv(storage.S3_ATTEMPTS_ENV, bad)
        with pytest.raises(ValueError, match=storage.S3_ATTEMPTS_ENV):
            storage.s3_attempts()


def test_ray_train_and_tune_storage_is_pyarrow_with_the_budget(monkeypatch):
    """ray_storage (train and tune) builds the filesystem for every s3:// URI, endpoint or not: Ray's own for
    a bare URI would retry 3 times."""
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    for endpoint in ("http://127.0.0.1:9", None):
        path, fs = ray_storage("s3://bucket/runs", endpoint)
        assert path == "bucket/runs" and isinstance(fs, storage.ArrowS3FileSystem)
        assert fs.attempts == storage.s3_attempts()
        copy = pickle.loads(pickle.dumps(fs))  # as Ray ships it to the controller and the workers
        assert isinstance(copy, storage.ArrowS3FileSystem) and copy.attempts == fs.attempts


def test_s3fs_tries_each_request_the_budget_and_names_it(s3_bucket, fault_proxy, no_backoff):
    storage.filesystem(f"{s3_bucket}/a.txt")[0].pipe_file(f"{s3_bucket[5:]}/a.txt", b"x")
    proxy = fault_proxy(always={"HeadObject": FAILED_AFTER_APPLY})
    fs, path = storage.filesystem(f"{s3_bucket}/a.txt", endpoint_url=proxy.endpoint, attempts=3)
    with pytest.raises(OSError) as raised:
        fs.info(path)
    assert proxy.faults()["HeadObject"]["failed_after_apply"] == 3
    failure = storage_failure(raised.value)
    assert failure.line() == f"error: storage: HeadObject {s3_bucket}/a.txt failed after 3 attempts: HTTP 500 (Internal Server Error)"
    assert failure.exit_code == exit_codes.TEMPFAIL == 75


def test_a_slowdown_on_writes_and_listings_names_the_key(s3_bucket, fault_proxy, no_backoff):
    proxy = fault_proxy(always={"PutObject": SLOWDOWN, "ListObjectsV2": SLOWDOWN})
    fs, path = storage.filesystem(f"{s3_bucket}/out/b.json", endpoint_url=proxy.endpoint)
    with pytest.raises(OSError) as raised:
        fs.pipe_file(path, b"{}")
    assert storage_failure(raised.value).line() == (
        f"error: storage: PutObject {s3_bucket}/out/b.json failed after {storage.s3_attempts()} attempts: "
        "HTTP 503 SlowDown (Please reduce your request rate.)")
    with pytest.raises(OSError) as raised, fs.open(f"{path}.part", "wb") as handle:  # a file's write: s3fs's call_s3
        handle.write(b"{}")
    assert storage_failure(raised.value).line().startswith(f"error: storage: PutObject {s3_bucket}/out/b.json.part failed")
    with pytest.raises(OSError) as raised:
        fs.ls(f"{s3_bucket[5:]}/out")
    assert storage_failure(raised.value).line().startswith(f"error: storage: ListObjectsV2 {s3_bucket}/out failed after")
    assert proxy.faults()["PutObject"]["slowdown"] == 2 * storage.s3_attempts()


def test_pyarrow_tries_the_budget_after_pickling_and_names_the_key(s3_bucket, fault_proxy):
    proxy = fault_proxy(always={"HeadObject": FAILED_AFTER_APPLY})
    fs, base = storage.arrow_filesystem(f"{s3_bucket}/runs", endpoint_url=proxy.endpoint, attempts=4)
    copy = pickle.loads(pickle.dumps(fs))  # pyarrow's own pickling would come back with 3 tries
    with pytest.raises(OSError) as raised:
        copy.get_file_info(f"{base}/run/.validate_storage_marker")
    assert proxy.faults()["HeadObject"]["failed_after_apply"] == 4
    failure = storage_failure(raised.value, budget=4)
    assert failure.line() == (f"error: storage: HeadObject {s3_bucket}/runs/run/.validate_storage_marker failed "
                              "after 4 attempts: HTTP 500 (No response body.)")


class FakeClientError(Exception):
    """botocore's ClientError as it looks from outside (its `response` and `operation_name`)."""

    def __init__(self, status: int, code: str, operation: str, retries: int):
        self.response = {"Error": {"Code": code, "Message": "Access Denied" if status == 403 else "boom"},
                         "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": retries}}
        self.operation_name = operation
        super().__init__(f"An error occurred ({code}) when calling the {operation} operation")


def test_a_refusal_is_exit_1_and_errors_that_are_not_storage_are_left_alone():
    denied = PermissionError("Access Denied")
    denied.__cause__ = FakeClientError(403, "AccessDenied", "PutObject", 0)
    denied.add_note("storage request: PutObject s3://bucket/scores/x.parquet")
    failure = storage_failure(denied)
    assert failure.line() == "error: storage: PutObject s3://bucket/scores/x.parquet failed: HTTP 403 AccessDenied (Access Denied)"
    assert failure.exit_code == exit_codes.REFUSED == 1
    assert storage_failure(RuntimeError("a bug")) is None
    assert storage_failure(OSError(28, "No space left on device")) is None


def test_errors_inside_rays_wrappers_are_found_in_their_text():
    """What Ray raises on the driver for a failed controller, task or worker carries the original as text."""
    arrow = ("Traceback (most recent call last):\n  File \"storage.py\", line 1\nOSError: When getting information "
             "for key 'runs/mlp/.validate_storage_marker' in bucket 'bkt': AWS Error SLOW_DOWN (HTTP status 503) "
             "during HeadObject operation: Please reduce your request rate.\n")
    wrapped = RuntimeError(f"training failed: {arrow}")
    assert storage_failure(wrapped).line() == (
        f"error: storage: HeadObject s3://bkt/runs/mlp/.validate_storage_marker failed after {storage.s3_attempts()} "
        "attempts: HTTP 503 SLOW_DOWN (Please reduce your request rate.)")
    boto = ("ray.exceptions.RayTaskError(OSError): ray::Write() ...\nOSError: [Errno 121] Internal Server Error\n"
            "storage request: PutObject s3://bkt/scores/part-1.parquet\n")
    cause = RuntimeError("An error occurred (InternalError) when calling the PutObject operation (reached max "
                         "retries: 4): We encountered an internal error.")
    outer = RuntimeError(boto)
    outer.__cause__ = cause
    assert storage_failure(outer).line() == ("error: storage: PutObject s3://bkt/scores/part-1.parquet failed after "
                                            "5 attempts: InternalError (We encountered an internal error.)")


def test_run_main_ends_with_one_line_and_exit_75(capsys):
    def main(argv):
        raise OSError("When reading information for key 'x/y' in bucket 'b': AWS Error UNKNOWN (HTTP status 500) "
                      "during GetObject operation: No response body.")

    with pytest.raises(SystemExit) as exited:
        run_main(main, [])
    err = capsys.readouterr().err
    assert exited.value.code == 75
    assert err.splitlines() == [err.strip()] and err.startswith("error: storage: GetObject s3://b/x/y failed after ")
    assert "Traceback" not in err


def test_a_caller_that_retries_itself_states_its_attempts_in_the_note():
    """thorax_ray.lease sends each request once (total_max_attempts 1) and retries it within the budget itself."""
    error = PermissionError("Internal Server Error")
    error.__cause__ = FakeClientError(500, "InternalError", "PutObject", 0)
    error.add_note("storage request: PutObject s3://bucket/scores/_lock.json after 5 attempts")
    assert storage_failure(error).line() == ("error: storage: PutObject s3://bucket/scores/_lock.json failed after 5 "
                                             "attempts: HTTP 500 InternalError (boom)")
