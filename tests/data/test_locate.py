import os

import pytest

from tests.helpers import upload_tree, write_text
from thorax_ray.data.locate import LayoutError, discover
from thorax_ray.data.nih_csv import DATA_ENTRY_HEADER, SAMPLE_LABELS_HEADER

NAMES = ["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000003_000.png"]


def rows(names=NAMES):
    return [f"{n},No Finding,{int(n[9:12])},{int(n[:8])},40,M,PA,2500,2048,0.143,0.143" for n in names]


def make_layout(root, layout):
    """Builds one of the accepted dataset layouts with placeholder image files."""
    if layout == "full":
        write_text(root / "Data_Entry_2017.csv", "\n".join([DATA_ENTRY_HEADER, *rows()]) + "\n")
        write_text(root / "test_list.txt", "00000003_000.png\n")
        write_text(root / "train_val_list.txt", "\n".join(NAMES[:3]) + "\n")
        folders = ["images_001", "images_001", "images_002", "images_012"]
        paths = [root / f / "images" / n for f, n in zip(folders, NAMES)]
    elif layout == "sample":
        write_text(root / "sample_labels.csv", "\n".join([SAMPLE_LABELS_HEADER, *rows()]) + "\n")
        paths = [root / "sample" / "images" / n for n in NAMES]
    elif layout == "flat":
        write_text(root / "Data_Entry_2017.csv", "\n".join([DATA_ENTRY_HEADER, *rows()]) + "\n")
        paths = [root / n for n in NAMES]
    else:
        raise ValueError(layout)
    for path in paths:
        write_text(path, "png")
    return {n: str(p) for n, p in zip(NAMES, paths)}


@pytest.mark.parametrize("layout", ["full", "sample", "flat"])
def test_every_local_layout(tmp_path, layout):
    expected = make_layout(tmp_path, layout)
    files = discover(str(tmp_path))
    assert files.images == expected
    assert os.path.basename(files.metadata_csv) in ("Data_Entry_2017.csv", "sample_labels.csv")
    if layout == "full":
        assert files.test_list.endswith("test_list.txt") and files.train_val_list.endswith("train_val_list.txt")
    else:
        assert files.test_list is None and files.train_val_list is None


@pytest.mark.parametrize("layout", ["full", "sample", "flat"])
def test_every_s3_layout(tmp_path, s3_bucket, layout):
    expected = make_layout(tmp_path, layout)
    upload_tree(tmp_path, f"{s3_bucket}/nih")
    files = discover(f"{s3_bucket}/nih")
    assert files.metadata_csv.startswith(f"{s3_bucket}/nih/")
    assert {n: p.replace(f"{s3_bucket}/nih/", "") for n, p in files.images.items()} == {
        n: os.path.relpath(p, tmp_path) for n, p in expected.items()}


def test_sample_csv_one_level_down(tmp_path):
    make_layout(tmp_path / "kaggle", "sample")
    os.rename(tmp_path / "kaggle" / "sample_labels.csv", tmp_path / "kaggle" / "sample" / "sample_labels.csv")
    files = discover(str(tmp_path / "kaggle"))
    assert files.metadata_csv.endswith("sample/sample_labels.csv") and len(files.images) == 4


def test_same_image_twice_is_an_error(tmp_path):
    make_layout(tmp_path, "full")
    write_text(tmp_path / "images_005" / "images" / NAMES[0], "png")
    with pytest.raises(LayoutError, match=f"image {NAMES[0]} appears twice"):
        discover(str(tmp_path))


def test_missing_folder_or_metadata(tmp_path):
    with pytest.raises(LayoutError, match="not found"):
        discover(str(tmp_path / "nope"))
    write_text(tmp_path / "x.png", "png")
    with pytest.raises(LayoutError, match="no Data_Entry_2017.csv, sample_labels.csv or sample.csv"):
        discover(str(tmp_path))


def test_sample_csv_is_the_kaggle_sample_metadata(tmp_path):
    make_layout(tmp_path, "sample")
    os.rename(tmp_path / "sample_labels.csv", tmp_path / "sample.csv")
    files = discover(str(tmp_path))
    assert files.metadata_csv.endswith("/sample.csv") and len(files.images) == 4


def test_metadata_named_explicitly_and_images_of_every_format(tmp_path):
    make_layout(tmp_path / "data", "flat")
    os.rename(tmp_path / "data" / "Data_Entry_2017.csv", tmp_path / "labels.csv")
    for name in ("00000009_000.dcm", "00000010_000.jpg", "notes.txt"):
        write_text(tmp_path / "data" / name, "x")
    with pytest.raises(LayoutError, match="sample.csv found.*--metadata FILE"):
        discover(str(tmp_path / "data"))
    files = discover(str(tmp_path / "data"), metadata_csv=str(tmp_path / "labels.csv"))
    assert files.metadata_csv == str(tmp_path / "labels.csv") and not files.synthetic
    assert sorted(files.images) == sorted([*NAMES, "00000009_000.dcm", "00000010_000.jpg"])
    with pytest.raises(LayoutError, match="metadata file not found"):
        discover(str(tmp_path / "data"), metadata_csv=str(tmp_path / "nope.csv"))
