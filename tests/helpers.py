"""Small helpers shared by tests."""
from __future__ import annotations

import os

from thorax_ray import storage


def upload_tree(local_dir: str | os.PathLike, uri: str) -> None:
    """Copies a local folder to an s3:// prefix (as a user would with `aws s3 sync`)."""
    fs, base = storage.filesystem(uri)
    for folder, _, files in os.walk(local_dir):
        for name in files:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, local_dir).replace(os.sep, "/")
            fs.put_file(path, f"{base}/{relative}")


def write_text(path: str | os.PathLike, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    return str(path)
