import hashlib
import os

import numpy as np
from PIL import Image

from thorax_ray.data.manifest import build_manifest
from thorax_ray.data.nih_csv import read_bbox_list, read_metadata
from thorax_ray.synthetic.dataset import SyntheticConfig, write_preview, write_synthetic_dataset


def tree_digest(root):
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            digest.update(name.encode())
            digest.update(open(os.path.join(folder, name), "rb").read())
    return digest.hexdigest()


def test_full_nih_layout_reads_back_with_zero_errors(synthetic_small):
    root = synthetic_small
    for name in ("Data_Entry_2017.csv", "BBox_List_2017.csv", "train_val_list.txt", "test_list.txt"):
        assert (root / name).exists(), name
    assert (root / "Data_Entry_2017.csv").read_text().splitlines()[0] == (
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
    assert (root / "BBox_List_2017.csv").read_text().splitlines()[0] == "Image Index,Finding Label,Bbox [x,y,w,h],,,"
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert folders == [f"images_{i:03d}" for i in range(1, 13)]
    frame, summary = build_manifest(str(root))
    assert summary.rows == 120 and summary.images_found == 120
    assert summary.missing_images == 0 and summary.orphan_images == 0
    image = Image.open(frame["path"].iloc[0])
    assert image.mode == "L" and image.size == (64, 64)


def test_boxes_match_labels_and_lie_in_the_test_split(synthetic_small):
    root = synthetic_small
    boxes = read_bbox_list(str(root / "BBox_List_2017.csv"))
    labels = read_metadata(str(root / "Data_Entry_2017.csv")).frame.set_index("image_index")
    test_names = set((root / "test_list.txt").read_text().split())
    assert len(boxes) > 0
    assert set(boxes["image_index"]) <= test_names
    assert "Infiltrate" in (root / "BBox_List_2017.csv").read_text() or "Infiltration" not in set(boxes["finding"])
    for row in boxes.itertuples():
        assert labels.loc[row.image_index, row.finding.lower()] == 1
        assert 0 <= row.x and 0 <= row.y and row.x + row.w <= 64 + 1e-6 and row.y + row.h <= 64 + 1e-6


def test_deterministic_for_a_seed(tmp_path):
    config = dict(images=24, size=48, seed=11)
    write_synthetic_dataset(SyntheticConfig(out=str(tmp_path / "a"), workers=1, **config), progress=False)
    write_synthetic_dataset(SyntheticConfig(out=str(tmp_path / "b"), workers=2, **config), progress=False)
    write_synthetic_dataset(SyntheticConfig(out=str(tmp_path / "c"), workers=2, **{**config, "seed": 12}), progress=False)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")


def test_metadata_only(tmp_path):
    write_synthetic_dataset(SyntheticConfig(out=str(tmp_path), images=50, metadata_only=True), progress=False)
    frame, summary = build_manifest(str(tmp_path))
    assert summary.images_found == 0 and frame["path"].isna().all() and len(frame) == 50


def test_preview_contact_sheet(tmp_path):
    config = SyntheticConfig(out=str(tmp_path / "d"), images=200, size=64, seed=2)
    population = write_synthetic_dataset(config, progress=False)
    write_preview(config, population, str(tmp_path / "sheet.png"))
    sheet = np.asarray(Image.open(tmp_path / "sheet.png").convert("L"))
    assert sheet.shape[0] > 400 and sheet.shape[1] > 400 and sheet.std() > 20
