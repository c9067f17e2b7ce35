"""The kind of split (official lists or a random patient split) in the report's header and the terminal
table, and the published reference columns marked and grouped by whether they used the same kind
(issue 23, item 4)."""
from __future__ import annotations

import pandas as pd
import pytest

from thorax_ray.evaluation import comparison
from thorax_ray.evaluation import localization as L
from thorax_ray.evaluation import plots, references, report
from thorax_ray.labels import FINDINGS

EVIL = "<script>alert(1)</script>"
CHEXNET_SPLIT = {"kind": "random", "requested": "random", "val_fraction": 0.1, "test_fraction": 0.2, "seed": 0}
OFFICIAL_SPLIT = {"kind": "official", "requested": "official", "val_fraction": 0.1, "test_fraction": None, "seed": 0}


def metrics(data_split=None) -> dict:
    auroc = {f: 0.6 + 0.01 * i for i, f in enumerate(FINDINGS)}
    truth = pd.DataFrame([{"image_index": "a.png", "finding": "Mass", "x": 0, "y": 0, "w": 10, "h": 10}])
    model = {"auroc": auroc, "mean_auroc": 0.665,
             "localization": L.localization_accuracy({"a.png": [{"finding": "Mass", "x": 0, "y": 0, "w": 10,
                                                                   "h": 10}]}, truth)}
    out = {"split": "test", "dataset": "real", "split_hash": "abc", "models": {"cnn": model}}
    if data_split is not None:
        out["data_split"] = data_split
    return out


def test_every_reference_names_its_kind_of_split():
    assert set(references.REFERENCE_SPLIT) == set(references.REFERENCE_AUROC)
    assert references.REFERENCE_SPLIT[references.CHEXNET_2017] == "random"  # 0.841: random 70/10/20 (ANCHORS.md)
    assert references.REFERENCE_SPLIT[references.WANG_2017] == "official"  # 0.745
    assert references.REFERENCE_SPLIT[references.CHEXNET_REIMPL] == "random"
    for label, kind in references.REFERENCE_SPLIT.items():
        assert f"{kind} " in label  # the column's own name says it too


def test_terminal_table_states_the_split_and_groups_the_references():
    text = comparison.format_comparison_table(metrics(CHEXNET_SPLIT))
    lines = text.splitlines()
    assert lines[0] == "split kind: random patient split 70/10/20 (train/val/test), seed 0"
    assert f"(2) {references.CHEXNET_2017} [random split: the same kind as this run]" in lines
    assert f"(3) {references.CHEXNET_REIMPL} [random split: the same kind as this run]" in lines
    assert (f"(4) {references.WANG_2017} [official split: not this run's kind (random), not like-for-like]"
            in lines)
    assert next(line for line in lines if line.startswith("Cardiomegaly")).rstrip().endswith("0.8100")  # Wang last

    official = comparison.format_comparison_table(metrics(OFFICIAL_SPLIT)).splitlines()
    assert official[0].startswith("split kind: official split (NIH's test_list.txt; validation 10%")
    assert f"(2) {references.WANG_2017} [official split: the same kind as this run]" in official
    assert list(comparison.comparison_table(metrics(OFFICIAL_SPLIT)))[1:] == [
        references.WANG_2017, references.CHEXNET_2017, references.CHEXNET_REIMPL]


def test_without_a_recorded_split_the_table_says_so_and_keeps_the_published_order():
    lines = comparison.format_comparison_table(metrics()).splitlines()
    assert lines[0] == "split kind: not recorded"
    assert f"(2) {references.WANG_2017} [official split]" in lines
    assert comparison.reference_columns(metrics()) == list(references.REFERENCE_AUROC)
    assert comparison.run_split(metrics("random")) == {"kind": "random"}  # a bare kind is enough
    assert comparison.run_split(metrics(EVIL)) is None and comparison.run_split(metrics({"kind": EVIL})) is None


def test_report_header_and_reference_columns_follow_the_split_kind(tmp_path):
    text = open(report.write_report(tmp_path / "r.html", metrics(CHEXNET_SPLIT)), encoding="utf-8").read()
    facts = text.split("<p class=note>", 1)[1].split("</p>", 1)[0]
    assert "split: test | split kind: random patient split 70/10/20 (train/val/test), seed 0 |" in facts
    header = text.split("<thead>", 1)[1].split("</thead>", 1)[0]
    same = f"<th class=ref>{references.CHEXNET_2017} [random split: the same kind as this run]</th>"
    other = (f'<th class="ref other">{references.WANG_2017} [official split: not this run&#x27;s kind (random), '
             "not like-for-like]</th>")
    assert same in header and other in header and header.index(same) < header.index(other)
    assert "Reference columns on the same kind of split (random): " + references.CHEXNET_2017 in text
    assert f"On another kind of split (greyed; not like-for-like): {references.WANG_2017}." in text
    assert (f"{references.REFERENCE_LOCALIZATION_LABEL}; official split: not this run&#x27;s kind (random), "
            "not like-for-like") in text

    official = report.report_html(metrics(OFFICIAL_SPLIT))
    assert "split kind: official split (NIH&#x27;s test_list.txt; validation 10% of train_val patients" in official
    assert f"<th class=ref>{references.WANG_2017} [official split: the same kind as this run]</th>" in official
    assert f"{references.REFERENCE_LOCALIZATION_LABEL}; official split: the same kind as this run" in official
    unknown = report.report_html(metrics())
    assert "split kind: not recorded" in unknown and "The kind of split of this run is not recorded" in unknown
    assert 'class="ref other"' not in unknown


@pytest.mark.parametrize("data_split", [{"kind": EVIL}, {**CHEXNET_SPLIT, "seed": EVIL}, EVIL])
def test_a_hostile_split_record_comes_out_escaped(data_split):
    text = report.report_html(metrics(data_split))
    assert EVIL not in text and "<script" not in text.lower()


def test_auroc_plot_names_the_split_kind(tmp_path):
    table = comparison.comparison_table(metrics(CHEXNET_SPLIT))
    path = plots.plot_auroc_comparison(table, tmp_path / "auroc.png", data_split=CHEXNET_SPLIT)
    assert open(path, "rb").read().startswith(b"\x89PNG")
