"""report.html in headless Chromium: plots visible in the screenshot (a report whose images are broken
fails the check); the answer (a sentence per comparison, the headline chart, hits and misses) inside the
first 1,400 x 900 viewport, every image loaded, and the page printed with every section open. Needs
Debian's `chromium` (.ci/run installs it); skipped without it outside CI."""
from __future__ import annotations

import itertools
import os
import re

import numpy as np
import pandas as pd
import pytest

from thorax_ray.evaluation import classification as C
from thorax_ray.evaluation import comparison
from thorax_ray.evaluation import localization as L
from thorax_ray.evaluation import plots, report, report_summary
from thorax_ray.evaluation.chromium import (RenderError, check_screenshot, find_chromium, measure_layout, print_pdf,
                                            render_report, screenshot, with_sections_open)
from thorax_ray.labels import BOXED_FINDINGS, FINDINGS

if find_chromium() is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must have headless Chromium (apt-get install chromium); .ci/run installs it")
    pytest.skip("headless Chromium not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    labels = (rng.random((200, len(FINDINGS))) < 0.3).astype(np.int8)
    scores = {"small_cnn": labels + rng.normal(size=labels.shape), "mlp": 0.3 * labels + rng.normal(size=labels.shape)}
    metrics = {"split": "test", "dataset": "synthetic",
               "models": {name: {"auroc": {f: 0.7 for f in FINDINGS}, "mean_auroc": 0.7} for name in scores}}
    roc = plots.plot_roc_curves(labels, scores, out / "roc.png", split="test")
    return report.write_report(out / "report.html", metrics, images={"ROC curves (test split)": roc})


def test_report_renders_with_plots_visible(report_html, tmp_path):
    check = render_report(report_html, str(tmp_path / "shot.png"))
    assert check.ok, check.format()
    assert os.path.getsize(check.screenshot) > 0 and check.width == 1400


def test_broken_images_and_empty_page_fail_the_check(report_html, tmp_path):
    text = open(report_html, encoding="utf-8").read()
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', 'src="data:image/png;base64,AAAA"', text))
    check = render_report(str(broken), str(tmp_path / "broken.png"))
    assert check.plots_visible is False and not check.ok

    empty = tmp_path / "empty.html"
    empty.write_text("<!DOCTYPE html><html><body></body></html>")
    check = check_screenshot(screenshot(str(empty), str(tmp_path / "empty.png"), height=600))
    assert check.blank and not check.ok


def test_failing_or_missing_browser_is_a_clear_error(report_html, tmp_path, monkeypatch):
    with pytest.raises(RenderError, match="Chromium failed on .*report.html"):
        screenshot(report_html, str(tmp_path / "x.png"), browser="/bin/false")
    monkeypatch.setenv("THORAX_CHROMIUM", str(tmp_path / "no-such-browser"))
    with pytest.raises(RenderError, match="apt-get install chromium"):
        screenshot(report_html, str(tmp_path / "y.png"))


# ------------------------------------------------------------------ the answer in the first viewport

VIEWPORT = (1400, 900)
ANSWER = ("#summary .verdict", "#headline-chart", "#hits-and-misses figure")


@pytest.fixture(scope="module")
def answer_report(tmp_path_factory):
    """A report shaped like the demo's: four paired models and one set beside (six comparisons), three
    notes, every section, six overlays of hits and misses."""
    out = tmp_path_factory.mktemp("answer")
    rng = np.random.default_rng(1)
    n, groups = 200, np.repeat(np.arange(100), 2)
    labels = (rng.random((n, len(FINDINGS))) < 0.3).astype(np.int8)
    strength = {"small_cnn": 1.2, "mlp": 0.3, "mlp_follow_up": 0.5, "fusion": 1.4}
    scores = {name: k * labels + rng.normal(size=labels.shape) for name, k in strength.items()}
    view, follow_up = np.where(np.arange(n) % 3 == 0, "AP", "PA"), np.tile([0, 5], n // 2)
    models = {name: dict(C.summarize_model(labels, s, groups, labels_val=labels, scores_val=s, view_position=view,
                                           follow_up=follow_up, n_boot=20), init="random init")
              for name, s in scores.items()}
    truth = pd.DataFrame([{"image_index": f"{i}.png", "finding": f, "x": 100 + i, "y": 200, "w": 150, "h": 100}
                          for i, f in enumerate(BOXED_FINDINGS)])
    predicted = {f"{i}.png": [{"finding": f, "x": 120 + i, "y": 210, "w": 100, "h": 80, "score": 0.8}]
                 for i, f in enumerate(BOXED_FINDINGS)}
    models["small_cnn"]["localization"] = L.localization_accuracy(predicted, truth)
    models["small_cnn@random"] = dict(models["small_cnn"], evaluated_in="out/demo/evaluation-random-split",
                                      label="small_cnn (random init; synthetic, 1338 test images of a random "
                                            "patient split 70/10/20 (train/val/test), seed 0; evaluated separately, "
                                            "not paired)")
    metrics = {"split": "test", "dataset": "synthetic", "split_hash": "5354f208e075fa9e", "data_split": "official",
               "models": models, "chance_localization": L.chance_localization(truth),
               "paired": [{"model_a": a, "model_b": b, "result": C.paired_bootstrap_difference(
                   labels, scores[a], scores[b], groups, n_boot=20)} for a, b in itertools.combinations(scores, 2)],
               "notes": ["test rows with scores from every model: 200 (missing for 0)",
                         "synthetic data: numbers are not comparable with the published real-data columns",
                         "small_cnn@random: from out/demo/evaluation-random-split, on its own test rows ("
                         + models["small_cnn@random"]["label"] + ")"]}
    images = {"ROC curves": plots.plot_roc_curves(labels, scores, out / "roc.png"),
              "AUROC per finding": plots.plot_auroc_comparison(
                  comparison.comparison_table(metrics), out / "auroc.png", ci=comparison.comparison_ci(metrics))}
    thresholds = models["small_cnn"]["thresholds"]
    xray = np.linspace(0, 1, 128 * 128).reshape(128, 128)
    overlays = {}
    for i, finding in enumerate(BOXED_FINDINGS[:6]):
        probability = float(np.clip(thresholds[finding] + (0.2 if i % 2 else -0.2), 0.01, 0.99))
        path = plots.plot_heatmap_overlay(xray, np.outer(np.hanning(8), np.hanning(8)), out / f"overlay{i}.png",
                                          truth_boxes=[{"x": 30, "y": 30, "w": 40, "h": 40, "finding": finding}],
                                          title=f"{i}.png: {finding} p={probability:.2f}")
        overlays[f"small_cnn: {i}.png {finding} (p={probability:.2f})"] = report_summary.Overlay(
            path, "small_cnn", finding, probability)
    return report.write_report(out / "report.html", metrics, images=images, overlays=overlays,
                               title="thorax-ray: CNN vs metadata MLP vs fusion")


def test_the_answer_is_in_the_first_viewport(answer_report):
    """A sentence per comparison, the headline chart and the hits and misses are all on the first screen;
    the details below are closed (their tables take no room)."""
    layout = measure_layout(answer_report, [*ANSWER, "details table", "details > summary"],
                            width=VIEWPORT[0], height=VIEWPORT[1])
    assert len(layout.boxes["#summary .verdict"]) == 7  # six pairs and the model set beside
    for selector in ANSWER:
        assert layout.in_first_viewport(selector), (selector, layout.boxes[selector])
    assert len(layout.boxes["#hits-and-misses figure"]) == report_summary.STRIP_SIZE
    assert layout.boxes["details table"] and not any(b.visible for b in layout.boxes["details table"])
    assert len(layout.boxes["details > summary"]) >= 8 and layout.page_height < 3 * VIEWPORT[1]


def test_every_image_loads_and_a_broken_one_is_named(answer_report, tmp_path):
    layout = measure_layout(answer_report, width=VIEWPORT[0], height=VIEWPORT[1])
    text = open(answer_report, encoding="utf-8").read()
    assert len(layout.images) == text.count("<img ") == 2 + 6 + 1 + report_summary.STRIP_SIZE
    assert layout.broken_images == []
    broken = tmp_path / "broken.html"
    broken.write_text(text.replace('<img src="data:image/png;base64,', '<img src="data:image/png;base64,AAAA', 1))
    assert len(measure_layout(str(broken)).broken_images) == 1


def test_the_report_prints_with_every_section_open(answer_report, tmp_path):
    """Printing opens every <details> (CSS only): as many pages as the page with every section opened by
    hand, more than the page printed as it shows on screen."""
    text = open(answer_report, encoding="utf-8").read()
    opened, as_on_screen = tmp_path / "opened.html", tmp_path / "closed.html"
    opened.write_text(with_sections_open(text))
    rule = "details::details-content { content-visibility: visible; display: contents; }"
    assert rule in text
    as_on_screen.write_text(text.replace(rule, ""))
    pages = print_pdf(answer_report, str(tmp_path / "report.pdf"))
    assert os.path.getsize(tmp_path / "report.pdf") > 10_000
    assert pages == print_pdf(str(opened), str(tmp_path / "opened.pdf"))
    assert pages > print_pdf(str(as_on_screen), str(tmp_path / "closed.pdf")) + 2


def test_layout_and_print_errors_are_clear(tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p></body></html>")
    with pytest.raises(RenderError, match="Chromium failed to lay out .*page.html"):
        measure_layout(str(page), browser="/bin/false")
    with pytest.raises(RenderError, match="Chromium failed to print .*page.html"):
        print_pdf(str(page), str(tmp_path / "x.pdf"), browser="/bin/false")
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".layout-")]  # the measured copy is removed
