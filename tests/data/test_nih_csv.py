import logging
import math

import numpy as np
import pytest

from tests.helpers import write_text
from thorax_ray.data.nih_csv import (BBOX_HEADER, DATA_ENTRY_HEADER, SAMPLE_LABELS_HEADER, MetadataError, parse_age,
                                     parse_metadata_text, read_bbox_list, read_metadata)
from thorax_ray.labels import LabelError

DATA_ENTRY_ROWS = [
    "00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143",
    "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143",
    "00000002_000.png,No Finding,0,2,80,F,AP,2500,2048,0.171,0.171",
]


def data_entry(rows=DATA_ENTRY_ROWS, trailing_comma=False):
    end = "," if trailing_comma else ""
    return "\n".join([DATA_ENTRY_HEADER + end, *[r + end for r in rows]]) + "\n"


@pytest.mark.parametrize("trailing_comma", [False, True], ids=["v2020", "2017-trailing-comma"])
def test_data_entry_layouts(trailing_comma):
    table = parse_metadata_text(data_entry(trailing_comma=trailing_comma), source="Data_Entry_2017.csv")
    frame = table.frame
    assert table.layout == "data_entry"
    assert list(frame["image_index"]) == ["00000001_000.png", "00000001_001.png", "00000002_000.png"]
    assert list(frame["patient_id"]) == [1, 1, 2] and list(frame["follow_up"]) == [0, 1, 0]
    assert list(frame["age_years"]) == [57.0, 58.0, 80.0]
    assert list(frame["sex"]) == ["M", "M", "F"] and list(frame["view_position"]) == ["PA", "PA", "AP"]
    assert list(frame["original_width"]) == [2682, 2894, 2500]
    assert frame["pixel_spacing_y"].iloc[2] == pytest.approx(0.171)
    assert list(frame["cardiomegaly"]) == [1, 1, 0] and list(frame["emphysema"]) == [0, 1, 0]
    assert frame[["atelectasis", "hernia"]].to_numpy().sum() == 0


def test_sample_labels_layout_with_age_strings(tmp_path):
    text = "\n".join([
        SAMPLE_LABELS_HEADER,
        "00000013_005.png,Emphysema|Infiltration,5,13,060Y,M,AP,3056,2544,0.139,0.139",
        "00000032_001.png,Hernia,1,32,011M,F,PA,2500,2048,0.168,0.168",
        "00000040_003.png,No Finding,3,40,007D,F,PA,2500,2048,0.168,0.168",
    ])
    path = write_text(tmp_path / "sample_labels.csv", text)
    table = read_metadata(path)
    assert table.layout == "sample_labels"
    ages = table.frame["age_years"].tolist()
    assert ages[0] == 60.0 and ages[1] == pytest.approx(11 / 12) and ages[2] == pytest.approx(7 / 365.25)
    assert table.frame["original_height"].tolist() == [2544, 2048, 2048]
    assert table.frame["hernia"].tolist() == [0, 1, 0]


@pytest.mark.parametrize("text, years", [("57", 57.0), ("058Y", 58.0), ("011M", 11 / 12), ("007D", 7 / 365.25),
                                         ("", None), (" 3y ", 3.0)])
def test_parse_age(text, years):
    assert parse_age(text) == (None if years is None else pytest.approx(years))


def test_impossible_ages_become_missing_and_are_counted(caplog):
    rows = [*DATA_ENTRY_ROWS,
            "00000003_000.png,Mass,0,3,148,M,PA,2500,2048,0.171,0.171",
            "00000004_000.png,Mass,0,4,413,M,PA,2500,2048,0.171,0.171"]
    with caplog.at_level(logging.WARNING):
        table = parse_metadata_text(data_entry(rows), source="Data_Entry_2017.csv")
    assert table.impossible_ages == 2
    assert len(table.frame) == 5  # never dropped
    assert math.isnan(table.frame["age_years"].iloc[3]) and math.isnan(table.frame["age_years"].iloc[4])
    assert "2 impossible ages" in caplog.text and "row 5" in caplog.text


def test_garbage_age_is_a_clear_error():
    rows = [DATA_ENTRY_ROWS[0], "00000003_000.png,Mass,0,3,old,M,PA,2500,2048,0.171,0.171"]
    with pytest.raises(MetadataError, match=r"Data_Entry_2017.csv, row 3: 'Patient Age'"):
        parse_metadata_text(data_entry(rows), source="Data_Entry_2017.csv")


def test_unknown_sex_and_view_are_kept_not_crashing():
    rows = ["00000003_000.png,Mass,0,3,40,O,LL,2500,2048,0.171,0.171",
            "00000004_000.png,Mass,0,4,40,,,2500,2048,0.171,0.171"]
    table = parse_metadata_text(data_entry(rows), source="x.csv")
    assert table.frame["sex"].tolist() == [None, None]
    assert table.frame["view_position"].tolist() == ["other", None]
    assert table.unknown_sex == 2 and table.unknown_view_position == 2


def test_unknown_label_names_file_and_row():
    rows = [DATA_ENTRY_ROWS[0], "00000003_000.png,Mass|Covid,0,3,40,M,PA,2500,2048,0.171,0.171"]
    with pytest.raises(LabelError, match=r"Data_Entry_2017.csv, row 3: unknown label 'Covid'"):
        parse_metadata_text(data_entry(rows), source="Data_Entry_2017.csv")


def test_duplicate_image_index_is_an_error():
    rows = [*DATA_ENTRY_ROWS, DATA_ENTRY_ROWS[1]]
    with pytest.raises(MetadataError, match=r"duplicate 'Image Index'.*00000001_001.png at rows \[3, 5\]"):
        parse_metadata_text(data_entry(rows), source="Data_Entry_2017.csv")


@pytest.mark.parametrize("name", ["../00000001_000.png", "images/00000001_000.png", "/etc/passwd",
                                  "..", "a\\b.png", "s3://b/x.png"])
def test_path_traversal_names_are_rejected(name):
    rows = [DATA_ENTRY_ROWS[0], f"{name},Mass,0,3,40,M,PA,2500,2048,0.171,0.171"]
    with pytest.raises(MetadataError, match=r"row 3: 'Image Index' .* not a plain file name"):
        parse_metadata_text(data_entry(rows), source="Data_Entry_2017.csv")


def test_unknown_header_and_bad_field_count():
    with pytest.raises(MetadataError, match="row 1: unrecognised header"):
        parse_metadata_text("a,b,c\n1,2,3\n", source="x.csv")
    with pytest.raises(MetadataError, match="row 2: expected 11 fields"):
        parse_metadata_text(data_entry(["00000001_000.png,Mass,0,1"]), source="x.csv")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(MetadataError, match="not found"):
        read_metadata(str(tmp_path / "Data_Entry_2017.csv"))


def test_bbox_list(tmp_path):
    path = write_text(tmp_path / "BBox_List_2017.csv", "\n".join([
        BBOX_HEADER,
        "00013118_008.png,Atelectasis,225.084745762712,547.019216763771,86.7796610169491,79.1864406779661",
        "00014716_007.png,Infiltrate,100,200,50,60",
    ]) + "\n")
    boxes = read_bbox_list(path)
    assert boxes["finding"].tolist() == ["Atelectasis", "Infiltration"]
    assert np.allclose(boxes.loc[1, ["x", "y", "w", "h"]].to_numpy(dtype=float), [100, 200, 50, 60])


@pytest.mark.parametrize("header", [
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "Original Image Width,Original Image Height,Original Image Pixel Spacing x,Original Image Pixel Spacing y",
    "image_index,finding_labels,follow_up,patient_id,patient_age,patient_sex,view_position,"
    "OriginalImageWidth,OriginalImageHeight,OriginalImagePixelSpacing_x,OriginalImagePixelSpacing_y",
    "Finding Labels,Image Index,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],Comment",
])
def test_header_variants_are_matched_by_name(header):
    row = "00000013_005.png,Emphysema,5,13,060Y,M,AP,3056,2544,0.139,0.141"
    if header.startswith("Finding"):
        row = "Emphysema,00000013_005.png,5,13,060Y,M,AP,3056,2544,0.139,0.141,a comment"
    table = parse_metadata_text(f"{header}\n{row}\n", source="export.csv")
    frame = table.frame
    assert table.layout == "variant" and frame["image_index"].tolist() == ["00000013_005.png"]
    assert frame["age_years"].tolist() == [60.0] and frame["sex"].tolist() == ["M"]
    assert frame["original_height"].tolist() == [2544] and frame["pixel_spacing_y"].tolist() == [0.141]
    assert frame["emphysema"].tolist() == [1] and frame["follow_up"].tolist() == [5]


def test_optional_columns_may_be_absent_and_ambiguous_headers_are_errors():
    table = parse_metadata_text("Image Index,Finding Labels,Patient ID\na.dcm,Mass,3\n", source="min.csv")
    frame = table.frame
    assert frame["patient_id"].tolist() == [3] and frame["mass"].tolist() == [1]
    assert frame["follow_up"].isna().all() and frame["age_years"].isna().all() and frame["sex"].tolist() == [None]
    with pytest.raises(MetadataError, match=r"ambiguous header: 'Patient Gender' and 'Patient Sex'"):
        parse_metadata_text("Image Index,Finding Labels,Patient ID,Patient Gender,Patient Sex\n", source="x.csv")
    with pytest.raises(MetadataError, match="missing columns Patient ID"):
        parse_metadata_text("Image Index,Finding Labels\na.png,Mass\n", source="x.csv")
