"""A local filesystem whose first read of each file fails, shared across Ray worker processes
through marker files (so 'failed once' holds whichever worker reads the file)."""
from __future__ import annotations

import os

from fsspec.implementations.local import LocalFileSystem


class FlakyFileSystem(LocalFileSystem):
    def __init__(self, marker_dir: str, failures: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.marker_dir = marker_dir
        self.failures = failures

    def cat_file(self, path, start=None, end=None, **kwargs):
        marker = os.path.join(self.marker_dir, os.path.basename(path) + ".failures")
        seen = int(open(marker).read()) if os.path.exists(marker) else 0
        if seen < self.failures:
            with open(marker, "w") as handle:
                handle.write(str(seen + 1))
            raise ConnectionError(f"injected transient failure #{seen + 1} for {path}")
        return super().cat_file(path, start=start, end=end, **kwargs)
