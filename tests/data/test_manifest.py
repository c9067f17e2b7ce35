import os

import pandas as pd
import pytest

from tests.data.test_locate import NAMES, make_layout
from tests.helpers import upload_tree
from thorax_ray.data.manifest import MANIFEST_COLUMNS, ManifestError, build_manifest, read_manifest, write_manifest
from thorax_ray.data.nih_csv import DATA_ENTRY_HEADER
from thorax_ray.data.splits import SplitConfig, SplitError, check_patient_disjoint
from thorax_ray.labels import FINDING_COLUMNS
from thorax_ray.storage import NotTextError


def test_manifest_columns_paths_and_official_split(tmp_path):
    expected = make_layout(tmp_path, "full")
    frame, summary = build_manifest(str(tmp_path))
    assert tuple(frame.columns) == MANIFEST_COLUMNS
    assert dict(zip(frame["image_index"], frame["path"])) == expected
    assert frame.set_index("image_index").loc["00000003_000.png", "split"] == "test"
    assert set(frame.loc[frame["image_index"] != "00000003_000.png", "split"]) <= {"train", "val"}
    assert summary.rows == 4 and summary.patients == 3 and summary.images_found == 4
    assert summary.missing_images == 0 and summary.orphan_images == 0
    assert summary.split_source.startswith("official lists")
    assert frame["age_years"].dtype == "float64" and set(frame["sex"]) == {"M"}
    assert (frame[list(FINDING_COLUMNS)].to_numpy() == 0).all()


def test_missing_images_and_orphans_are_reported_not_dropped(tmp_path, capsys):
    paths = make_layout(tmp_path, "flat")
    os.remove(paths[NAMES[1]])
    (tmp_path / "99999999_000.png").write_text("png")
    frame, summary = build_manifest(str(tmp_path))
    assert len(frame) == 4
    assert frame.set_index("image_index")["path"].isna().to_dict() == {n: n == NAMES[1] for n in NAMES}
    assert summary.missing_images == 1 and summary.missing_examples == [NAMES[1]]
    assert summary.orphan_images == 1 and summary.orphan_examples == ["99999999_000.png"]
    text = summary.format()
    assert "missing images   1  e.g. 00000001_001.png" in text and "99999999_000.png" in text


def test_metadata_only_dataset_is_valid(tmp_path):
    paths = make_layout(tmp_path, "flat")
    for path in paths.values():
        os.remove(path)
    frame, summary = build_manifest(str(tmp_path))
    assert len(frame) == 4 and frame["path"].isna().all()
    assert summary.images_found == 0 and "metadata-only dataset" in summary.format()


def test_write_and_read_back_local(tmp_path):
    make_layout(tmp_path / "data", "sample")
    frame, summary = build_manifest(str(tmp_path / "data"))
    write_manifest(frame, str(tmp_path / "out" / "manifest.parquet"), summary)
    back, info = read_manifest(str(tmp_path / "out" / "manifest.parquet"))
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert info["split_hash"] == summary.split_hash and info["split_source"] == "patient hash"


def test_s3_dataset_to_s3_manifest(tmp_path, s3_bucket):
    make_layout(tmp_path, "full")
    upload_tree(tmp_path, f"{s3_bucket}/nih")
    frame, summary = build_manifest(f"{s3_bucket}/nih")
    assert frame["path"].str.startswith(f"{s3_bucket}/nih/images_0").all()
    write_manifest(frame, f"{s3_bucket}/manifests/manifest.parquet", summary)
    back, info = read_manifest(f"{s3_bucket}/manifests/manifest.parquet")
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert info["split_hash"] == summary.split_hash


def test_reading_a_non_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(str(tmp_path / "nope.parquet"))
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(ManifestError, match="not a thorax-ray manifest"):
        read_manifest(str(tmp_path / "other.parquet"))


def test_manifest_split_is_patient_disjoint_on_synthetic(synthetic_small):
    frame, summary = build_manifest(str(synthetic_small))
    check_patient_disjoint(frame)
    assert summary.missing_images == 0 and summary.orphan_images == 0 and summary.images_found == len(frame)
    test_list = set((synthetic_small / "test_list.txt").read_text().split())
    assert set(frame.loc[frame["split"] == "test", "image_index"]) == test_list


def test_a_csv_with_only_a_header_is_an_error(tmp_path):
    """Before: rc 0 and a 0-row manifest beside the dataset's PNGs."""
    make_layout(tmp_path, "flat")
    (tmp_path / "Data_Entry_2017.csv").write_text(DATA_ENTRY_HEADER + "\n")
    with pytest.raises(ManifestError, match=r"Data_Entry_2017.csv: no data rows \(only a header\)"):
        build_manifest(str(tmp_path))


def test_training_data_without_validation_patients_is_an_error_naming_the_split(tmp_path):
    """Before: committed, and training failed about 50 s later."""
    make_layout(tmp_path, "full")  # 3 patients: one in test_list.txt, two in train_val_list.txt
    build_manifest(str(tmp_path), SplitConfig(val_fraction=0.01))  # scoring or evaluation: any split may be empty
    with pytest.raises(SplitError, match="the val split has no patients .* raise --val-fraction"):
        build_manifest(str(tmp_path), SplitConfig(val_fraction=0.01, required=("train", "val")))


def test_a_binary_csv_is_an_error_naming_the_file(tmp_path):
    make_layout(tmp_path, "flat")
    (tmp_path / "Data_Entry_2017.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(NotTextError, match=r"Data_Entry_2017.csv: not UTF-8 text \(byte 0 is b'\\x89'\)"):
        build_manifest(str(tmp_path))
    (tmp_path / "Data_Entry_2017.csv").write_bytes(b"Image Index\x00\x00\x01")
    with pytest.raises(NotTextError, match=r"Data_Entry_2017.csv: a binary file \(NUL byte"):
        build_manifest(str(tmp_path))


# -- the kind of split (issue 23, item 4) -----------------------------------------------------------------

def write_listed_dataset(root, patients=400):
    """A metadata-only dataset with NIH's split lists: the first fifth of the patients in test_list.txt, the
    rest in train_val_list.txt. Returns the names in test_list.txt."""
    from tests.data.test_splits import population

    root.mkdir(parents=True, exist_ok=True)
    frame = population(patients)
    lines = [f"{name},No Finding,{name[9:12].lstrip('0') or 0},{pid},50,M,PA,2500,2048,0.143,0.143"
             for name, pid in zip(frame["image_index"], frame["patient_id"])]
    (root / "Data_Entry_2017.csv").write_text("\n".join([DATA_ENTRY_HEADER, *lines]) + "\n")
    is_test = frame["patient_id"] <= patients // 5
    (root / "test_list.txt").write_text("\n".join(frame.loc[is_test, "image_index"]) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(frame.loc[~is_test, "image_index"]) + "\n")
    return set(frame.loc[is_test, "image_index"])


def test_default_manifest_split_is_unchanged(tmp_path):
    """Split hashes of these layouts before the split kind existed: no option, no change."""
    for layout, expected in (("full", "4bb1a2c0ab6d75fb"), ("sample", "f172ee0326a429f6")):
        make_layout(tmp_path / layout, layout)
        frame, summary = build_manifest(str(tmp_path / layout))
        assert summary.split_hash == expected
    assert summary.split_source == "patient hash"


def test_random_kind_ignores_the_official_lists(tmp_path):
    official_test = write_listed_dataset(tmp_path)
    frame, summary = build_manifest(str(tmp_path))
    assert set(frame.loc[frame["split"] == "test", "image_index"]) == official_test
    assert summary.split["kind"] == "official" and summary.split_source.startswith("official lists")

    chexnet = SplitConfig(kind="random", val_fraction=0.1, test_fraction=0.2, seed=0, required=("train", "val"))
    frame, summary = build_manifest(str(tmp_path), chexnet)
    check_patient_disjoint(frame)
    assert set(frame.loc[frame["split"] == "test", "image_index"]) != official_test
    share = frame.groupby("split")["patient_id"].nunique() / frame["patient_id"].nunique()
    assert share["test"] == pytest.approx(0.2, abs=0.06) and share["val"] == pytest.approx(0.1, abs=0.05)
    assert summary.split == {"kind": "random", "requested": "random", "val_fraction": 0.1, "test_fraction": 0.2,
                             "seed": 0}
    assert "random patient split" in summary.split_source and "official lists ignored" in summary.format()
    # the same rows as the patient hash a dataset without the lists gets
    (tmp_path / "test_list.txt").unlink()
    (tmp_path / "train_val_list.txt").unlink()
    unlisted, _ = build_manifest(str(tmp_path), chexnet)
    assert (unlisted["split"] == frame["split"]).all()


def test_split_kind_round_trips_through_the_manifest(tmp_path):
    from thorax_ray.data.manifest import manifest_split

    write_listed_dataset(tmp_path / "data", patients=60)
    for config in (SplitConfig(), SplitConfig(kind="random", val_fraction=0.15, test_fraction=0.25, seed=4)):
        frame, summary = build_manifest(str(tmp_path / "data"), config)
        write_manifest(frame, str(tmp_path / "manifest.parquet"), summary)
        _, info = read_manifest(str(tmp_path / "manifest.parquet"))
        assert manifest_split(info) == summary.split and manifest_split(info)["kind"] == config.kind
        assert info["split_hash"] == summary.split_hash and info["split_source"] == summary.split_source
    # manifests written before the kind was recorded: the kind their split_source names, nothing more
    assert manifest_split({"split_source": "official lists (validation carved by patient)"})["kind"] == "official"
    assert manifest_split({"split_source": "patient hash"}) == {
        "kind": "random", "requested": None, "val_fraction": None, "test_fraction": None, "seed": None}
    assert manifest_split({})["kind"] is None
