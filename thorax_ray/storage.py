"""One way to reach local paths and `s3://` URIs (through fsspec / s3fs).

Credentials, region and endpoint come from the standard AWS environment variables and config files
(`AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, `AWS_REGION`, `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, ...);
an explicit `endpoint_url` serves S3-compatible stores (MinIO, Ceph, a test server).
"""
from __future__ import annotations

import json
import os
import posixpath
import re

import fsspec
import pyarrow.fs as pafs
import pyarrow.parquet as pq

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_remote(uri: str) -> bool:
    return bool(_SCHEME.match(str(uri))) and not str(uri).startswith("file://")


def endpoint_from_env() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


S3_ATTEMPTS_PER_REQUEST = 5
"""The default retry budget: the most tries of one S3 request, the first included. `s3_attempts()` is the
budget in force (env `THORAX_S3_ATTEMPTS` overrides this default), and every S3 client the package builds
takes it: s3fs/botocore (`filesystem`: botocore's "standard" retry mode, which retries connection errors,
throttling (503 SlowDown) and 500/502/503/504 with jittered exponential backoff) and pyarrow's S3
filesystem (`arrow_filesystem`: `AwsStandardS3RetryStrategy`, the same rules in the AWS C++ SDK) under Ray
Train's and Tune's storage. It is the only retry layer: s3fs's own retry loop (5 passes by default, nested
twice around botocore's for reads, so up to 25 times the tries) runs one pass, and `data.read.read_bytes`
calls once. Reading a whole object (`cat_file`) is a size request and a GET, so at most 2 * N requests
(aiohttp may resend once more on a kept-alive connection the server closed). A response cut off mid-body
is not retried: that image is quarantined as `read_error`. A missing object (404) is never retried. A
request that still fails after N tries ends the job with one line (`thorax_ray.storage_errors`)."""
S3_ATTEMPTS_ENV = "THORAX_S3_ATTEMPTS"


def s3_attempts() -> int:
    """The retry budget in force: `THORAX_S3_ATTEMPTS` when set (a whole number >= 1), else
    S3_ATTEMPTS_PER_REQUEST. Read where a client is built; a client pickled to a Ray worker keeps the
    budget it was built with."""
    text = os.environ.get(S3_ATTEMPTS_ENV, "").strip()
    if not text:
        return S3_ATTEMPTS_PER_REQUEST
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{S3_ATTEMPTS_ENV}={text!r}: expected the most tries of one S3 request, a whole number >= 1")
    return int(text)


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def filesystem(uri: str, *, endpoint_url: str | None = None,
               attempts: int | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Returns (filesystem, path within it) for a local path or URI; `attempts`: the most tries of one
    s3:// request (default: `s3_attempts()`; the image reads take theirs from `--read-attempts`)."""
    uri = str(uri)
    if uri.startswith("s3://") or uri.startswith("s3a://"):
        from thorax_ray.s3 import S3FileSystem  # deferred: s3fs (s3:// only)

        endpoint = endpoint_url or endpoint_from_env()
        client_kwargs = {"endpoint_url": endpoint} if endpoint else {}
        if _region():
            client_kwargs["region_name"] = _region()
        retries = {"total_max_attempts": attempts or s3_attempts(), "mode": "standard"}
        fs = S3FileSystem(client_kwargs=client_kwargs, config_kwargs={"retries": retries}, passes=1,
                          use_listings_cache=False)
        return fs, uri.split("://", 1)[1].rstrip("/")
    if is_remote(uri):
        fs, path = fsspec.core.url_to_fs(uri)
        return fs, path
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    return fsspec.filesystem("file"), os.path.abspath(os.path.expanduser(uri))


class ArrowS3FileSystem(pafs.S3FileSystem):
    """pyarrow's S3 filesystem retrying each request up to `attempts` times (AWS standard retries), a
    budget it keeps when pickled to Ray's controller and workers (pyarrow's own pickling drops the retry
    strategy, so a copy would fall back to pyarrow's default of 3)."""

    def __init__(self, *, attempts: int, **options):
        super().__init__(retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts), **options)
        self.attempts = attempts

    def __reduce__(self):
        _, (options,) = super().__reduce__()
        return _rebuild_arrow_s3, (options, self.attempts)


def _rebuild_arrow_s3(options: dict, attempts: int) -> ArrowS3FileSystem:
    return ArrowS3FileSystem(attempts=attempts, **options)


def arrow_filesystem(uri: str, *, endpoint_url: str | None = None,
                     attempts: int | None = None) -> tuple[ArrowS3FileSystem, str]:
    """(pyarrow S3 filesystem, "bucket/path") for an s3:// URI, for the pyarrow consumers (Ray Train's and
    Tune's `storage_filesystem`), with the retry budget `s3_attempts()` (or `attempts`) and the endpoint of
    an S3-compatible store when one is configured (`endpoint_url`, else AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL).
    Region: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1 for an explicit endpoint, else the bucket's own."""
    path = str(uri).split("://", 1)[1].rstrip("/")
    options = {}
    endpoint = endpoint_url or endpoint_from_env()
    if endpoint:
        scheme, host = endpoint.split("://", 1) if "://" in endpoint else ("https", endpoint)
        options.update(endpoint_override=host.rstrip("/"), scheme=scheme)
    region = _region() or ("us-east-1" if endpoint else pafs.resolve_s3_region(path.split("/", 1)[0]))
    return ArrowS3FileSystem(attempts=attempts or s3_attempts(), region=region, **options), path


def join(root: str, *parts: str) -> str:
    """Joins path parts to a local path or URI with `/` (storage keys never use backslashes)."""
    root = str(root)
    if is_remote(root):
        return posixpath.join(root.rstrip("/"), *parts)
    return os.path.join(root, *parts)


def to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """Inverse of `filesystem`: a path inside `fs` back to a URI (plain path for local files)."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return path
    return f"{'s3' if protocol in ('s3', 's3a') else protocol}://{path}"


def read_parquet(uri: str, *, columns: list[str] | None = None, endpoint_url: str | None = None):
    """A Parquet file (local or s3://) as a pandas DataFrame."""
    fs, path = filesystem(uri, endpoint_url=endpoint_url)
    with fs.open(path, "rb") as handle:
        return pq.read_table(handle, columns=columns).to_pandas()


class NotTextError(ValueError):
    """A file that should be UTF-8 text (CSV, split list) but is binary; the message names it."""


def read_text(uri: str, *, endpoint_url: str | None = None) -> str:
    """A UTF-8 text file (local or s3://) as a string, a leading BOM dropped; a file that is not UTF-8
    text (or holds NUL bytes) is a NotTextError naming the file and the first bad byte."""
    data = read_bytes(uri, endpoint_url=endpoint_url)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise NotTextError(f"{uri}: not UTF-8 text (byte {error.start} is {data[error.start:error.start + 1]!r}); "
                           "expected a text file such as a CSV") from None
    if "\x00" in text:
        raise NotTextError(f"{uri}: a binary file (NUL byte at position {text.index(chr(0))}); "
                           "expected a text file such as a CSV")
    return text


def read_json(uri: str, *, endpoint_url: str | None = None) -> dict | None:
    """A JSON file (local or s3://) parsed, or None when it does not exist."""
    fs, path = filesystem(uri, endpoint_url=endpoint_url)
    try:
        with fs.open(path, "rb") as handle:
            return json.loads(handle.read())
    except FileNotFoundError:
        return None


def write_json(uri: str, obj, *, endpoint_url: str | None = None, default=None) -> None:
    """Writes `obj` as indented JSON (`default`: json.dumps's hook for values JSON lacks) with
    write_bytes: readers see the old file or the new one, never a partial one."""
    write_bytes(uri, json.dumps(obj, indent=2, default=default).encode(), endpoint_url=endpoint_url)


def write_text(uri: str, text: str, *, endpoint_url: str | None = None) -> None:
    """Writes `text` as UTF-8 with write_bytes (one step; creates the folder)."""
    write_bytes(uri, text.encode("utf-8"), endpoint_url=endpoint_url)


def write_bytes(uri: str, data: bytes, *, endpoint_url: str | None = None) -> None:
    """Writes `data` in one step, so readers see the old file or the new one, never a partial one
    (local: write a temporary file + rename; object stores: one PUT). Creates the folder."""
    fs, path = filesystem(uri, endpoint_url=endpoint_url)
    if is_remote(uri):
        fs.pipe_file(path, bytes(data))
        return
    fs.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def read_bytes(uri: str, *, endpoint_url: str | None = None) -> bytes:
    """A file's bytes (local or s3://); FileNotFoundError when it does not exist."""
    fs, path = filesystem(uri, endpoint_url=endpoint_url)
    with fs.open(path, "rb") as handle:
        return handle.read()


def make_folder(uri: str, *, endpoint_url: str | None = None) -> None:
    """Creates a local folder (and its parents); object stores have no folders, only keys: nothing to do."""
    if not is_remote(uri):
        fs, path = filesystem(uri, endpoint_url=endpoint_url)
        fs.makedirs(path, exist_ok=True)


def list_names(uri: str, *, endpoint_url: str | None = None) -> list[str]:
    """The names (last path parts) of the entries in a folder or under a prefix; [] when there is none."""
    fs, path = filesystem(uri, endpoint_url=endpoint_url)
    if not fs.isdir(path):
        return []
    return [entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False)]
