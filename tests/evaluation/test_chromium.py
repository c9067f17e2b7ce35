"""report.html in headless Chromium: plots visible in the screenshot; a report whose images are broken
fails the check. Needs Debian's `chromium` (.ci/run installs it); skipped without it outside CI."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

from thorax_ray.evaluation import plots, report
from thorax_ray.evaluation.chromium import RenderError, check_screenshot, find_chromium, render_report, screenshot
from thorax_ray.labels import FINDINGS

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
