"""Resolving `--input`: NIH layouts, a flat folder of new PNGs without any CSV, manifest and list Parquet."""
import os
import shutil

import pandas as pd
import pytest

from thorax_ray.labels import FINDING_COLUMNS
from thorax_ray.manifest import MANIFEST_COLUMNS, build_manifest
from thorax_ray.scoring import InputError, resolve_input


def pngs(root):
    return sorted(os.path.join(f, n) for f, _, names in os.walk(root) for n in names if n.endswith(".png"))


def test_nih_dataset_uses_its_manifest_and_boxes(synthetic_small):
    found = resolve_input(str(synthetic_small))
    assert found.kind == "dataset" and found.has_labels and found.total_rows == 120
    assert found.bbox_csv.endswith("BBox_List_2017.csv")
    assert list(found.rows.columns[:len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert found.rows["path"].notna().all() and found.rows["age_years"].notna().all()


def test_flat_folder_without_csv_has_null_metadata(synthetic_small, tmp_path):
    folder = tmp_path / "new"
    (folder / "day2").mkdir(parents=True)
    for i, path in enumerate(pngs(synthetic_small)[:5]):
        shutil.copy(path, folder if i < 3 else folder / "day2")
    (folder / "notes.txt").write_text("not an image")
    found = resolve_input(str(folder))
    assert found.kind == "folder" and not found.has_labels and len(found.rows) == 5
    assert sorted(found.rows["image_index"]) == sorted(os.path.basename(p) for p in pngs(synthetic_small)[:5])
    assert found.rows["sex"].isna().all() and found.rows[list(FINDING_COLUMNS)].isna().all().all()
    shutil.copy(pngs(synthetic_small)[0], folder / "day2")  # the same name twice
    with pytest.raises(InputError, match="more than once"):
        resolve_input(str(folder))


def test_manifest_and_list_parquet(synthetic_small, tmp_path):
    manifest, _ = build_manifest(str(synthetic_small))
    manifest.head(7).to_parquet(tmp_path / "manifest.parquet")
    found = resolve_input(str(tmp_path / "manifest.parquet"))
    assert found.kind == "manifest" and len(found.rows) == 7 and found.has_labels
    pd.DataFrame({"path": manifest["path"].head(4)}).to_parquet(tmp_path / "list.parquet")
    found = resolve_input(str(tmp_path / "list.parquet"))
    assert found.kind == "list" and not found.has_labels
    assert list(found.rows["image_index"]) == list(manifest["image_index"].head(4))


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="input not found"):
        resolve_input(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no PNG images"):
        resolve_input(str(tmp_path / "empty"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="is a file"):
        resolve_input(str(tmp_path / "x.csv"))
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(InputError, match="path"):
        resolve_input(str(tmp_path / "t.parquet"))


@pytest.mark.parametrize("name", ["../../../x.png", "/tmp/x.png", "sub/x.png", "..", "C:x.png"])
def test_image_names_that_would_leave_the_overlay_folder_are_rejected(synthetic_small, tmp_path, name):
    """Before: an image_index of ../../../x.png in a manifest wrote its overlay outside --overlays."""
    manifest, _ = build_manifest(str(synthetic_small))
    manifest.loc[1, "image_index"] = name
    manifest.head(3).to_parquet(tmp_path / "manifest.parquet")
    with pytest.raises(ValueError, match=r"manifest.parquet, row 2: image name .* is not a plain file name"):
        resolve_input(str(tmp_path / "manifest.parquet"))
    pd.DataFrame({"image_index": ["a.png", name], "path": manifest["path"].head(2)}).to_parquet(tmp_path / "l.parquet")
    with pytest.raises(ValueError, match=r"l.parquet, row 2: image name"):
        resolve_input(str(tmp_path / "l.parquet"))
