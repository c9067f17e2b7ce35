"""Plots and the self-contained HTML report."""
from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest

from thorax_ray.evaluation import classification as C
from thorax_ray.evaluation import comparison
from thorax_ray.evaluation import localization as L
from thorax_ray.evaluation import plots, references, report
from thorax_ray.labels import BOXED_FINDINGS, FINDINGS

K = len(FINDINGS)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    n = 120
    groups = np.repeat(np.arange(60), 2)
    labels = (rng.random((n, K)) < 0.3).astype(np.int8)
    labels[:, FINDINGS.index("Hernia")] = 0  # no positives: plots and tables must cope
    scores = {"small_cnn": labels * 1.5 + rng.normal(size=(n, K)), EVIL: labels * 0.2 + rng.normal(size=(n, K))}
    view = np.where(np.arange(n) % 3 == 0, "AP", "PA")
    models = {name: C.summarize_model(labels, s, groups, labels_val=labels, scores_val=s, view_position=view, n_boot=50)
              for name, s in scores.items()}
    truth = pd.DataFrame([{"image_index": f"{i}.png", "finding": f, "x": 100 + i, "y": 200, "w": 150, "h": 100}
                          for i, f in enumerate(BOXED_FINDINGS)])
    predicted = {f"{i}.png": [{"finding": f, "x": 120 + i, "y": 210, "w": 100, "h": 80, "score": 0.8}]
                 for i, f in enumerate(BOXED_FINDINGS) if i % 2 == 0}
    models["small_cnn"]["localization"] = L.localization_accuracy(predicted, truth)
    metrics = {
        "split": "test", "dataset": "synthetic", "split_hash": "abc123", "models": models,
        "paired": [{"model_a": "small_cnn", "model_b": EVIL,
                    "result": C.paired_bootstrap_difference(labels, scores["small_cnn"], scores[EVIL], groups, n_boot=50)}],
        "chance_localization": L.chance_localization(truth),
        "notes": ["synthetic data: numbers are not comparable to the published ones"],
    }
    return labels, scores, metrics


@pytest.fixture(scope="module")
def figures(case, tmp_path_factory):
    labels, scores, metrics = case
    out = tmp_path_factory.mktemp("figures")
    roc = plots.plot_roc_curves(labels, scores, out / "roc.png", split="test")
    pr = plots.plot_pr_curves(labels, scores, out / "pr.png", split="test")
    bars = plots.plot_auroc_comparison(comparison.comparison_table(metrics), out / "sub" / "auroc.png",
                                       ci=comparison.comparison_ci(metrics))
    image = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    overlay = plots.plot_heatmap_overlay(image, np.outer(np.hanning(8), np.hanning(8)), out / "overlay.png",
                                         truth_boxes=[{"x": 10, "y": 10, "w": 20, "h": 20, "finding": "Mass"}],
                                         predicted_boxes=[{"x": 12, "y": 8, "w": 18, "h": 22, "score": 0.7}],
                                         title="Mass " + EVIL)
    return {"roc": roc, "pr": pr, "bars": bars, "overlay": overlay}


def test_plots_write_pngs(figures):
    for path in figures.values():
        with open(path, "rb") as handle:
            data = handle.read()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000
        assert b"http" not in data  # no matplotlib URL in the PNG metadata


def test_plots_reject_mismatched_scores(case, tmp_path):
    labels, scores, _ = case
    with pytest.raises(ValueError):
        plots.plot_roc_curves(labels, {"m": scores["small_cnn"][:10]}, tmp_path / "x.png")


def test_comparison_table_labels_our_columns_with_data_and_split(case):
    _, _, metrics = case
    table = comparison.comparison_table(metrics)
    assert "small_cnn (synthetic, test split)" in table
    assert list(table)[-3:] == list(references.REFERENCE_AUROC)
    assert table[references.WANG_2017]["Cardiomegaly"] == pytest.approx(0.81)
    assert table["small_cnn (synthetic, test split)"]["Hernia"] is None
    for column in references.REFERENCE_AUROC:
        assert "split" in column and "real data" in column
        assert set(references.REFERENCE_AUROC[column]) == set(FINDINGS) | {"mean"}
    assert set(references.REFERENCE_LOCALIZATION_IOBB) == {L.threshold_key(t) for t in L.IOBB_THRESHOLDS}


def test_report_is_self_contained_and_escaped(case, figures, tmp_path):
    _, _, metrics = case
    path = report.write_report(
        tmp_path / "out" / "report.html", metrics, title="Evaluation " + EVIL,
        images={"ROC curves (test split)": figures["roc"], "PR curves (test split)": figures["pr"],
                "AUROC comparison": figures["bars"]},
        overlays={"overlay " + EVIL: figures["overlay"]},
        sections=[{"title": "Extra " + EVIL, "text": "a & b", "table": {"columns": ["k", "v"], "rows": [[EVIL, 1]]}}])
    text = open(path, encoding="utf-8").read()

    # embedded images, decodable, and nothing fetched from anywhere: the three figures, the overlay, the
    # headline chart and the overlay again as the summary's thumbnail
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(uris) == 6
    assert all(base64.b64decode(u).startswith(PNG_MAGIC) for u in uris)
    assert not re.search(r"https?://", text)
    assert not re.search(r'(src|href)="(?!data:)', text)
    assert "<link" not in text and "<script" not in text.lower().replace("&lt;script", "")

    # escaping of every user-provided string
    assert EVIL not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text

    # headline: our columns labelled with dataset and split, the reference columns beside them
    assert "small_cnn (synthetic, test split)" in text
    for column in references.REFERENCE_AUROC:
        assert column in text
    assert "0.9248" in text and "0.7003" in text  # CheXNet Cardiomegaly, Wang Atelectasis
    ci = metrics["models"]["small_cnn"]["auroc_ci"]["Cardiomegaly"]
    assert f"[{ci[0]:.3f}, {ci[1]:.3f}]" in text

    # the other sections
    assert "Paired comparison" in text and "AUROC by view position" in text
    assert "AP (n = 40)" in text and "PA (n = 80)" in text
    assert "Operating thresholds" in text and "sensitivity" in text
    assert references.REFERENCE_LOCALIZATION_LABEL in text and "0.945" in text  # Wang Cardiomegaly at IoBB > 0.5
    assert "chance: one whole-image box" in text and "chance: the class&#x27;s median box" in text
    assert "synthetic data: numbers are not comparable" in text
    assert "a &amp; b" in text

    # the answer first: the sentence and the headline chart, then every detailed section closed
    delta = metrics["paired"][0]["result"]["mean"]
    sentence = comparison.comparison_sentence("small_cnn", EVIL, delta["delta"], delta["ci"])
    summary, details = text.index('<section id=summary>'), text.index("<details>")
    assert summary < text.index("&lt;script&gt;alert(1)", summary) < text.index("id=headline-chart") < details
    assert sentence.replace("<", "&lt;").replace(">", "&gt;") in text[summary:details]
    assert "<details open" not in text
    for title in ("AUROC per finding (test split)", "Curves (test split)", "Paired comparison",
                  "AUROC by view position", "Operating thresholds", "Average precision", "Localization",
                  "Heatmap overlays", "Extra "):
        assert text.index(f"<details><summary><h2>{title}") >= details


def test_report_without_optional_sections(case, tmp_path):
    _, _, metrics = case
    minimal = {"models": {"m": {"auroc": metrics["models"]["small_cnn"]["auroc"]}}}
    text = open(report.write_report(tmp_path / "r.html", minimal), encoding="utf-8").read()
    assert "m (synthetic, test split)" in text and "Localization" not in text and "Paired" not in text
    with pytest.raises(ValueError):
        report.write_report(tmp_path / "r.html", {"models": {}})


def test_format_comparison_table(case):
    _, _, metrics = case
    text = comparison.format_comparison_table(metrics)
    lines = text.splitlines()
    auroc = metrics["models"]["small_cnn"]["auroc"]["Cardiomegaly"]
    ci = metrics["models"]["small_cnn"]["auroc_ci"]["Cardiomegaly"]
    row = next(line for line in lines if line.startswith("Cardiomegaly"))
    assert f"{auroc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" in row
    assert row.rstrip().endswith("0.9165")  # last column: CheXNet reimplementation, as published
    assert next(line for line in lines if line.startswith("Hernia")).split()[1] == "n/a"
    assert "(1) small_cnn (synthetic, test split)" in text
    assert f"(3) {references.WANG_2017}" in text
    assert any(line.startswith("mean") for line in lines)


def test_report_says_init_features_protocol_and_cis(tmp_path):
    """Column labels say how each model started and what metadata it read; the MLP with and without
    follow-up # sit side by side with AUROC by follow-up bucket; AP and localization carry CIs; every
    localization row names its map method, resolution, thresholds and gate."""
    from thorax_ray.evaluation.protocols import localization_protocols

    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(60), 2)
    labels = (rng.random((120, K)) < 0.3).astype(np.int8)
    follow_up = np.tile([0, 5], 60)
    models = {}
    for name, features in (("mlp", ["age", "sex", "view_position"]),
                           ("mlp_fu", ["age", "sex", "view_position", "follow_up"])):
        models[name] = C.summarize_model(labels, labels + rng.normal(size=labels.shape), groups, follow_up=follow_up,
                                         n_boot=50)
        models[name].update(init="random init", metadata_features=features)
    truth = pd.DataFrame([{"image_index": f"{i}.png", "finding": "Mass", "x": 0, "y": 0, "w": 10, "h": 10}
                          for i in range(6)])
    predicted = {f"{i}.png": [{"finding": "Mass", "x": 0 if i % 2 else 50, "y": 0, "w": 10, "h": 10, "score": 1}]
                 for i in range(6)}
    protocols = localization_protocols(
        {"method": "cam", "shape": [14, 16, 16], "cell_centres": {"rows": [0.1], "cols": [0.1]}},
        {"threshold": 180, "max_boxes_per_finding": 2, "min_probability": {"kind": "calibrated", "rule": "youden"}})
    for protocol in protocols.values():
        protocol["result"] = L.localization_accuracy(predicted, truth)
        protocol["ci"] = L.localization_ci(predicted, truth, {f"{i}.png": i for i in range(6)}, n_boot=50)
    models["small_cnn"] = dict(models["mlp"], init="ImageNet init", localization=protocols["wang2017"]["result"],
                               localization_protocols=protocols)
    models["small_cnn"].pop("metadata_features")
    metrics = {"split": "test", "dataset": "synthetic", "models": models}
    text = open(report.write_report(tmp_path / "r.html", metrics), encoding="utf-8").read()
    assert "mlp (random init; age, sex, view position; synthetic, test split)" in text
    assert "mlp_fu (random init; age, sex, view position, follow-up #; synthetic, test split)" in text
    assert "small_cnn (ImageNet init; synthetic, test split)" in text
    assert "AUROC by follow-up # bucket" in text and "0 (n = 60)" in text and "4-9 (n = 60)" in text
    assert "AP [95% CI]" in text
    resamples = models["mlp"]["auroc_ci_resamples"]
    assert f"from {resamples['used']} of 50 resamples" in text
    assert ("Wang et al. 2017 protocol: cam maps 16x16 (receptive-field centres), thresholds 60 and 180 of 255, "
            "every region, no probability gate") in text
    assert ("boxes as scored: cam maps 16x16, threshold 180 of 255, at most 2 regions, findings gated by the "
            "checkpoint&#x27;s operating points (youden, chosen on validation)") in text
    mass_ci = protocols["wang2017"]["ci"]["Mass"]["0.5"]
    assert f"[{mass_ci[0]:.3f}, {mass_ci[1]:.3f}]" in text


def test_auroc_bars_accept_a_ci_that_excludes_the_point(tmp_path):
    """A percentile CI can lie beside its point (the mean's CI is over complete resamples only)."""
    table = {"m": {f: 0.7 for f in FINDINGS} | {"mean": 0.7}}
    ci = {"m": {"mean": [0.72, 0.8], "Mass": [0.5, 0.65]}}
    path = plots.plot_auroc_comparison(table, tmp_path / "bars.png", ci=ci)
    assert open(path, "rb").read().startswith(PNG_MAGIC)


def test_a_long_column_label_wraps_in_the_legend_instead_of_squeezing_the_bars(tmp_path):
    """A column set beside from another evaluation has a long label; the bars must still span the figure."""
    from PIL import Image

    long_label = "small_cnn (random init; synthetic, 1338 test images of a random patient split 70/10/20 " \
                 "(train/val/test), seed 0; evaluated separately, not paired)" * 2
    table = {name: {f: 0.8 for f in list(FINDINGS) + ["mean"]} for name in ("small_cnn", long_label)}
    path = plots.plot_auroc_comparison(table, str(tmp_path / "auroc.png"))
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    top = pixels[: pixels.shape[0] // 2]
    coloured = np.flatnonzero(((top.max(axis=2) - top.min(axis=2)) >= 60).any(axis=0))
    assert (coloured.max() - coloured.min()) / pixels.shape[1] > 0.7
