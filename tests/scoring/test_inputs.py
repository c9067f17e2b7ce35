"""Resolving `--input`: NIH layouts, a folder of new files without any CSV (every file a row, hidden
files counted), a CSV beside some files, collisions, --metadata, manifest and list Parquet."""
import os
import shutil

import pandas as pd
import pytest

from tests.helpers import write_text
from thorax_ray.data.inputs import InputError, resolve_input
from thorax_ray.data.manifest import MANIFEST_COLUMNS, build_manifest
from thorax_ray.data.nih_csv import SAMPLE_LABELS_HEADER
from thorax_ray.labels import FINDING_COLUMNS


def pngs(root):
    return sorted(os.path.join(f, n) for f, _, names in os.walk(root) for n in names if n.endswith(".png"))


def test_nih_dataset_uses_its_manifest_and_boxes(synthetic_small):
    found = resolve_input(str(synthetic_small))
    assert found.kind == "dataset" and found.has_labels and found.total_rows == 120  # CSVs, lists, record: not rows
    assert found.bbox_csv.endswith("BBox_List_2017.csv") and found.data_origin == "synthetic"
    assert list(found.rows.columns[:len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert found.rows["path"].notna().all() and found.rows["age_years"].notna().all()
    assert (found.rows["metadata_source"] == "csv").all()


def test_folder_without_csv_lists_every_file_and_counts_hidden_ones(synthetic_small, tmp_path):
    folder = tmp_path / "new"
    (folder / "day2" / "study" / "series").mkdir(parents=True)
    for i, path in enumerate(pngs(synthetic_small)[:5]):
        shutil.copy(path, folder if i < 3 else folder / "day2")
    (folder / "notes.txt").write_text("not an image")
    (folder / "day2" / "study" / "series" / "IM000001").write_bytes(b"deep, no extension")
    (folder / ".DS_Store").write_bytes(b"finder")
    (folder / "_SUCCESS").write_bytes(b"")
    found = resolve_input(str(folder))
    assert found.kind == "folder" and not found.has_labels and len(found.rows) == 7 and found.data_origin == "real"
    assert sorted(found.rows["image_index"]) == sorted(
        [os.path.basename(p) for p in pngs(synthetic_small)[:5]] + ["notes.txt", "IM000001"])
    assert sorted(os.path.basename(p) for p in found.ignored) == [".DS_Store", "_SUCCESS"]
    assert found.rows["sex"].isna().all() and found.rows[list(FINDING_COLUMNS)].isna().all().all()
    assert (found.rows["metadata_source"] == "none").all()
    first = pngs(synthetic_small)[0]
    shutil.copy(first, folder / "day2")  # the same name twice: one error naming both files
    name = os.path.basename(first)
    with pytest.raises(InputError, match=f"more than once.*'{name}' is {folder}/{name} and {folder}/day2/{name}"):
        resolve_input(str(folder))


def test_csv_rows_first_then_files_without_a_row(tmp_path):
    folder = tmp_path / "mixed"
    write_text(folder / "sample.csv", SAMPLE_LABELS_HEADER + "\n"
               "a.png,Mass,0,1,060Y,M,PA,2500,2048,0.139,0.139\n"
               "IM0002,No Finding,0,2,011M,F,AP,2500,2048,0.139,0.139\n"
               "gone.png,No Finding,0,3,40,F,AP,2500,2048,0.139,0.139\n")
    for name in ("a.png", "b.dcm", "series/x/y/IM0002"):
        write_text(folder / name, "bytes")
    found = resolve_input(str(folder))
    rows = found.rows.set_index("image_index")
    assert found.kind == "dataset" and sorted(rows.index) == ["IM0002", "a.png", "b.dcm", "gone.png"]
    assert rows.loc["IM0002", "path"] == str(folder / "series/x/y/IM0002")  # found by name, deep, no extension
    assert rows.loc["gone.png", "path"] is None  # quarantined as locate/missing when scored
    assert rows["metadata_source"].to_dict() == {"a.png": "csv", "IM0002": "csv", "gone.png": "csv", "b.dcm": "none"}
    assert rows.loc["a.png", "mass"] == 1 and pd.isna(rows.loc["b.dcm", "mass"])


def test_metadata_named_explicitly(tmp_path):
    folder = tmp_path / "incoming"
    write_text(folder / "a.dcm", "bytes")
    write_text(folder / "hospital export.csv", "Image Index,Finding Labels,Patient ID,Patient Sex,View Position,"
               "Original Image Pixel Spacing x,Original Image Pixel Spacing y\na.dcm,Mass,7,F,AP,0.2,0.21\n")
    found = resolve_input(str(folder), metadata_csv=str(folder / "hospital export.csv"))
    assert list(found.rows["image_index"]) == ["a.dcm"]  # the named CSV is not a row
    row = found.rows.iloc[0]
    assert (row["sex"], row["view_position"], row["pixel_spacing_y"]) == ("F", "AP", 0.21)
    assert row["metadata_source"] == "csv"
    with pytest.raises(Exception, match="metadata file not found"):
        resolve_input(str(folder), metadata_csv=str(tmp_path / "nope.csv"))


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
    with pytest.raises(InputError, match="no files to score"):
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
