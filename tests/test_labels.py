import numpy as np
import pytest

from thorax_ray.labels import (FINDING_COLUMNS, FINDINGS, LabelError, format_finding_labels,
                               normalise_bbox_label, parse_finding_labels)


def test_canonical_order_and_column_names():
    assert len(FINDINGS) == 14
    assert FINDINGS[0] == "Atelectasis" and FINDINGS[-1] == "Hernia"
    assert "Pleural_Thickening" in FINDINGS
    assert FINDING_COLUMNS[FINDINGS.index("Pleural_Thickening")] == "pleural_thickening"


def test_parse_multi_label_string():
    vector = parse_finding_labels("Cardiomegaly|Emphysema")
    assert vector.dtype == np.uint8 and vector.shape == (14,)
    assert [FINDINGS[i] for i in np.flatnonzero(vector)] == ["Cardiomegaly", "Emphysema"]


def test_no_finding_is_all_zero_and_round_trips():
    assert parse_finding_labels("No Finding").sum() == 0
    for text in ("No Finding", "Effusion|Infiltration", "Hernia"):
        assert format_finding_labels(parse_finding_labels(text)) == text


def test_unknown_label_names_file_row_and_label():
    with pytest.raises(LabelError, match=r"Data_Entry_2017.csv, row 7: unknown label 'Pneumonitis'"):
        parse_finding_labels("Effusion|Pneumonitis", source="Data_Entry_2017.csv", row=7)


def test_no_finding_with_other_labels_is_an_error():
    with pytest.raises(LabelError, match="combined"):
        parse_finding_labels("No Finding|Mass")


def test_bbox_infiltrate_spelling():
    assert normalise_bbox_label("Infiltrate") == "Infiltration"
    with pytest.raises(LabelError, match="Edema"):
        normalise_bbox_label("Edema", source="BBox_List_2017.csv", row=3)
