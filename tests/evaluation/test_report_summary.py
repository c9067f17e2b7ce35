"""The report's first screen: a sentence per paired comparison in the order of the pairs, the headline
chart, and a strip of overlay thumbnails that shows hits and misses at each model's operating threshold;
the detailed sections follow, closed."""
from __future__ import annotations

import base64
import re

import numpy as np

from thorax_ray.evaluation import report, report_summary
from thorax_ray.evaluation.report_summary import STRIP_SIZE, Overlay
from thorax_ray.labels import FINDINGS

PNG = b"\x89PNG\r\n\x1a\n"


def _model(mean: float, ci: list[float], thresholds: dict | None = None) -> dict:
    return {"auroc": {f: mean for f in FINDINGS}, "mean_auroc": mean, "auroc_ci": {"mean": ci},
            "thresholds": thresholds or {}}


def _pair(a: str, b: str, delta: float, ci: list[float]) -> dict:
    return {"model_a": a, "model_b": b, "result": {"mean": {"delta": delta, "ci": ci, "p_value": 0.01}}}


def metrics() -> dict:
    return {"split": "test", "dataset": "synthetic",
            "models": {"small_cnn": _model(0.85, [0.83, 0.87], {"Mass": 0.4, "Effusion": 0.3}),
                       "mlp": _model(0.61, [0.58, 0.64]), "fusion": _model(0.88, [0.86, 0.90]),
                       "small_cnn@random": dict(_model(0.83, [0.81, 0.84]), evaluated_in="out/other")},
            "paired": [_pair("small_cnn", "mlp", 0.236, [0.198, 0.272]),
                       _pair("small_cnn", "fusion", -0.035, [-0.058, -0.013]),
                       _pair("mlp", "fusion", 0.004, [-0.010, 0.018])]}


def test_one_sentence_per_pair_in_order_then_the_models_in_no_pair():
    summary = report_summary.summary(metrics(), None, None)
    assert summary["sentences"] == [
        "small_cnn beats mlp by +0.236 mean AUROC [0.198, 0.272].",
        "small_cnn trails fusion by -0.035 mean AUROC [-0.058, -0.013].",
        "mlp is indistinguishable from fusion: +0.004 mean AUROC [-0.010, 0.018], the 95% CI spans 0.",
        "small_cnn@random: mean AUROC 0.830 [0.810, 0.840] on the test split (evaluated on its own test rows, "
        "not paired)."]
    assert base64.b64decode(summary["chart"]["src"].split(",", 1)[1]).startswith(PNG)
    assert summary["strip"] == []


def test_without_pairs_each_model_gets_its_mean():
    only = {"models": {"m": _model(0.7, [0.65, 0.75])}}
    assert report_summary.summary(only, None, None)["sentences"] == [
        "m: mean AUROC 0.700 [0.650, 0.750] on the test split (no paired comparison in this report)."]
    no_mean = {"models": {"m": {"auroc": {f: 0.7 for f in FINDINGS}}}}
    assert report_summary.summary(no_mean, None, None)["chart"] is None


def _overlays(probabilities: dict[str, float], finding: str = "Mass", positive: bool = True) -> dict:
    return {f"{name} {finding}": Overlay(PNG + name.encode(), "small_cnn", finding, p, positive)
            for name, p in probabilities.items()}


def test_the_strip_shows_half_hits_half_misses_most_confident_first():
    overlays = _overlays({"h1": 0.5, "h2": 0.9, "h3": 0.7, "m1": 0.3, "m2": 0.05, "m3": 0.2})  # threshold 0.4
    strip = report_summary._strip(overlays, metrics(), None)
    assert [f["caption"] for f in strip] == ["h2 Mass", "h3 Mass", "m2 Mass", "m3 Mass"]
    assert [f["css_class"] for f in strip] == ["hit", "hit", "miss", "miss"]
    assert strip[0]["text"] == "hit (true positive): Mass, p = 0.90 ≥ threshold 0.40 (small_cnn)"
    assert strip[2]["text"] == "miss (false negative): Mass, p = 0.05 < threshold 0.40 (small_cnn)"


def test_a_short_side_is_filled_by_the_other_and_negatives_count_too():
    hits_only = _overlays({"h1": 0.5, "h2": 0.9, "h3": 0.7, "h4": 0.6, "h5": 0.8})
    assert [f["caption"] for f in report_summary._strip(hits_only, metrics(), None)] == [
        "h2 Mass", "h5 Mass", "h3 Mass", "h4 Mass"]
    negatives = _overlays({"fp": 0.8, "tn": 0.1}, finding="Effusion", positive=False)  # threshold 0.3
    strip = report_summary._strip(negatives, metrics(), None)
    assert [(f["caption"], f["css_class"]) for f in strip] == [("tn Effusion", "hit"), ("fp Effusion", "miss")]
    assert strip[1]["text"].startswith("miss (false positive): Effusion, p = 0.80 ≥ threshold 0.30")


def test_overlays_without_a_known_outcome_are_shown_in_their_order():
    plain = {f"overlay {i}": PNG + bytes([i]) for i in range(6)}
    no_threshold = {"mlp Mass": Overlay(PNG, "mlp", "Mass", 0.9)}  # mlp has no operating thresholds
    strip = report_summary._strip(plain | no_threshold, metrics(), None)
    assert len(strip) == STRIP_SIZE and [f["caption"] for f in strip] == [f"overlay {i}" for i in range(4)]
    assert {f["css_class"] for f in strip} == {""} and strip[0]["text"] == "overlay 0"


def test_the_page_opens_with_the_answer_and_keeps_every_overlay(tmp_path):
    overlays = _overlays({f"o{i}": p for i, p in enumerate(np.linspace(0.05, 0.95, 6))})
    text = report.report_html(metrics(), overlays=overlays)
    summary, first_details = text.index("<section id=summary>"), text.index("<details>")
    assert summary < first_details
    head = text[summary:first_details]
    assert head.count("<li class=verdict>") == 4 and "id=headline-chart" in head
    assert len(re.findall(r'<figure class="(?:hit|miss)"><img src="data:image/png', head)) == STRIP_SIZE
    # every overlay is still in its own (closed) section, and printing opens the sections
    assert text.count('<img src="data:image/png', first_details) == 6
    assert "<details open" not in text
    assert "@media print" in text and "details::details-content { content-visibility: visible" in text
