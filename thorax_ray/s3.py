"""s3fs's filesystem with its own retry loop's pass count as a constructor argument, and every failed
request labelled with its operation and key.

s3fs retries failed requests in a loop of its own (`S3FileSystem.retries`, a class attribute, 5) around
botocore's retries, and its reads nest that loop twice, so the tries multiply. `storage.filesystem` makes
botocore the one retry layer and sets `passes=1` here. As a constructor argument the setting is part of
the instance's storage options, so it survives pickling to Ray workers (an attribute set after
construction would not). s3fs's errors name neither the key nor the request (`OSError: Internal Server
Error`); each failed request gets a note `storage request: <Operation> s3://bucket/key`, which travels with
the exception (in its traceback text too, through Ray) and which `thorax_ray.storage_errors` reads.
Imported only by `storage.filesystem`, for s3:// URIs.
"""
from __future__ import annotations

import s3fs
from fsspec.asyn import sync_wrapper

NOTE_PREFIX = "storage request: "


def operation_name(method) -> str:
    """botocore's method name (`head_object`) as S3's API names the operation (`HeadObject`)."""
    name = method if isinstance(method, str) else getattr(method, "__name__", str(method))
    return "".join(part.capitalize() for part in name.split("_"))


def request_note(method, kwargs: dict) -> str:
    bucket = kwargs.get("Bucket", "")
    key = kwargs.get("Key", kwargs.get("Prefix", ""))
    return f"{NOTE_PREFIX}{operation_name(method)} s3://{bucket}/{key}".rstrip("/")


class S3FileSystem(s3fs.S3FileSystem):
    def __init__(self, *args, passes: int, **kwargs):
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes}")
        super().__init__(*args, **kwargs)
        self.retries = passes

    async def _call_s3(self, method, *akwarglist, **kwargs):
        try:
            return await super()._call_s3(method, *akwarglist, **kwargs)
        except Exception as error:
            if not any(note.startswith(NOTE_PREFIX) for note in getattr(error, "__notes__", ())):
                error.add_note(request_note(method, {**{k: v for a in akwarglist for k, v in a.items()}, **kwargs}))
            raise

    call_s3 = sync_wrapper(_call_s3)  # s3fs's own is bound to its _call_s3 (used by its files' writes and the lease)
