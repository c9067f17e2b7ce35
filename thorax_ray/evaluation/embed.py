"""Images embedded in the report as data URIs (nothing loaded from anywhere when it is opened)."""
from __future__ import annotations

import base64
import os

from thorax_ray import storage

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".svg": "image/svg+xml"}


def data_uri(image, endpoint_url: str | None = None) -> str:
    if isinstance(image, (bytes, bytearray)):
        data, mime = bytes(image), "image/png"
    else:
        path = os.fspath(image)
        mime = MIME.get(os.path.splitext(path)[1].lower())
        if mime is None:
            raise ValueError(f"{path}: not an image this report embeds ({', '.join(MIME)})")
        data = storage.read_bytes(path, endpoint_url=endpoint_url)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
