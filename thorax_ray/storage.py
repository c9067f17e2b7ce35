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
import pyarrow.parquet as pq

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_remote(uri: str) -> bool:
    return bool(_SCHEME.match(str(uri))) and not str(uri).startswith("file://")


def endpoint_from_env() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def filesystem(uri: str, *, endpoint_url: str | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Returns (filesystem, path within it) for a local path or URI."""
    uri = str(uri)
    if uri.startswith("s3://") or uri.startswith("s3a://"):
        import s3fs  # deferred: s3fs (s3:// only)

        endpoint = endpoint_url or endpoint_from_env()
        client_kwargs = {"endpoint_url": endpoint} if endpoint else {}
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            client_kwargs["region_name"] = region
        fs = s3fs.S3FileSystem(client_kwargs=client_kwargs, use_listings_cache=False)
        return fs, uri.split("://", 1)[1].rstrip("/")
    if is_remote(uri):
        fs, path = fsspec.core.url_to_fs(uri)
        return fs, path
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    return fsspec.filesystem("file"), os.path.abspath(os.path.expanduser(uri))


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
    fs, path = filesystem(uri, endpoint_url=endpoint_url)
    with fs.open(path, "rb") as handle:
        data = handle.read()
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


def write_json(uri: str, obj, *, endpoint_url: str | None = None) -> None:
    """Writes `obj` as indented JSON in one step, so readers see the old file or the new one, never a
    partial one (local: write a temporary file + rename; object stores: one PUT). Creates the folder."""
    fs, path = filesystem(uri, endpoint_url=endpoint_url)
    data = json.dumps(obj, indent=2).encode()
    if is_remote(uri):
        fs.pipe_file(path, data)
        return
    fs.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)
