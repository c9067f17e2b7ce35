"""s3fs's filesystem with its own retry loop's pass count as a constructor argument.

s3fs retries failed requests in a loop of its own (`S3FileSystem.retries`, a class attribute, 5) around
botocore's retries, and its reads nest that loop twice, so the tries multiply. `storage.filesystem` makes
botocore the one retry layer and sets `passes=1` here. As a constructor argument the setting is part of
the instance's storage options, so it survives pickling to Ray workers (an attribute set after
construction would not). Imported only by `storage.filesystem`, for s3:// URIs.
"""
from __future__ import annotations

import s3fs


class S3FileSystem(s3fs.S3FileSystem):
    def __init__(self, *args, passes: int, **kwargs):
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes}")
        super().__init__(*args, **kwargs)
        self.retries = passes
