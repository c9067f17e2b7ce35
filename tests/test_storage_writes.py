"""storage's writers (write_bytes, write_text, write_json with a `default`), read_bytes, make_folder and
list_names, on local paths and on S3 (moto's server)."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

from thorax_ray import storage


def _plain(value):
    if isinstance(value, np.floating):
        return value.item()
    raise TypeError(type(value))


def test_local_writes_create_the_folder_and_leave_no_temporary_file(tmp_path):
    storage.write_bytes(str(tmp_path / "a" / "b" / "x.bin"), b"\x00\x01")
    storage.write_text(str(tmp_path / "a" / "t.html"), "caf\u00e9 <b>")
    assert (tmp_path / "a" / "b" / "x.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a" / "t.html").read_bytes() == "caf\u00e9 <b>".encode("utf-8")
    assert sorted(os.listdir(tmp_path / "a")) == ["b", "t.html"]
    assert storage.read_bytes(str(tmp_path / "a" / "b" / "x.bin")) == b"\x00\x01"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(str(tmp_path / "missing"))


def test_write_json_with_default_matches_json_dump(tmp_path):
    """metrics.json keeps its bytes: the same text as json.dump(obj, handle, indent=2, default=...)."""
    obj = {"a": np.float32(0.5), "b": [1, None, float("nan")], "c": {"d": "\u00e9"}}
    handle = io.StringIO()
    json.dump(obj, handle, indent=2, default=_plain)
    storage.write_json(str(tmp_path / "m.json"), obj, default=_plain)
    assert (tmp_path / "m.json").read_text() == handle.getvalue()
    with pytest.raises(TypeError):
        storage.write_json(str(tmp_path / "n.json"), {"a": np.float32(1)})


def test_make_folder_and_list_names_local(tmp_path):
    folder = str(tmp_path / "x" / "thresholds")
    assert storage.list_names(folder) == []
    storage.make_folder(folder)
    assert os.path.isdir(folder) and storage.list_names(folder) == []
    storage.write_text(os.path.join(folder, "m.v1.json"), "{}")
    assert storage.list_names(folder) == ["m.v1.json"]


def test_writes_and_listing_on_s3(s3_bucket):
    root = f"{s3_bucket}/eval"
    storage.make_folder(root)  # nothing to do on an object store
    assert storage.list_names(root) == []
    storage.write_bytes(storage.join(root, "plots", "roc.png"), b"\x89PNG")
    storage.write_text(storage.join(root, "report.html"), "<p>caf\u00e9</p>")
    storage.write_json(storage.join(root, "thresholds", "m.v1.json"), {"x": np.float64(0.25)}, default=_plain)
    assert storage.read_bytes(storage.join(root, "plots", "roc.png")) == b"\x89PNG"
    assert storage.read_text(storage.join(root, "report.html")) == "<p>caf\u00e9</p>"
    assert storage.read_json(storage.join(root, "thresholds", "m.v1.json")) == {"x": 0.25}
    assert sorted(storage.list_names(root)) == ["plots", "report.html", "thresholds"]
    assert storage.list_names(storage.join(root, "thresholds")) == ["m.v1.json"]
