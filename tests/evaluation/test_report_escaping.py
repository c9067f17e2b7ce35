"""The report template escapes every value it is given: hostile model, finding, note, caption and section
strings come out as text, never as markup."""
from __future__ import annotations

import re

from thorax_ray.evaluation import report
from thorax_ray.labels import FINDINGS

EVIL = "<script>alert(1)</script>"
BREAKOUT = "\"'><img src=x onerror=alert(2)>"  # would close an attribute and open an element
PNG = b"\x89PNG\r\n\x1a\nnot really"


def hostile_metrics() -> dict:
    model = {"auroc": {f: 0.7 for f in FINDINGS}, "mean_auroc": 0.7, "init": EVIL, "metadata_features": [BREAKOUT],
             "threshold_rule": EVIL, "threshold_metrics": {f: {"threshold": 0.5} for f in FINDINGS},
             "view_position": {EVIL: {"n": BREAKOUT, "auroc": {"Mass": 0.6}}},
             "auroc_ci_resamples": {"used": EVIL, "of": 10, "classes": BREAKOUT}}
    return {"split": EVIL, "dataset": BREAKOUT, "split_hash": EVIL, "notes": [EVIL, BREAKOUT],
            "models": {EVIL: model, BREAKOUT: dict(model)},
            "paired": [{"model_a": EVIL, "model_b": BREAKOUT, "result": {}}]}


def test_hostile_strings_come_out_escaped(tmp_path):
    path = report.write_report(
        tmp_path / "report.html", hostile_metrics(), title=EVIL, images={EVIL: PNG}, overlays={BREAKOUT: PNG},
        sections=[{"title": BREAKOUT, "text": EVIL + "\n\n" + BREAKOUT,
                   "table": {"columns": [EVIL, BREAKOUT], "rows": [[EVIL, BREAKOUT]]}, "images": {BREAKOUT: PNG}}])
    text = open(path, encoding="utf-8").read()
    assert EVIL not in text and BREAKOUT not in text
    assert "<script" not in text.lower() and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&quot;&#x27;&gt;&lt;img src=x onerror=alert(2)&gt;" in text
    assert f"<title>{'&lt;script&gt;alert(1)&lt;/script&gt;'}</title>" in text
    # every image is a data URI of the bytes given, its caption escaped inside the alt attribute: the three
    # given, the headline chart and the overlay's thumbnail in the summary
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="[^"<>]*">', text)) == 5
    tags = re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", text)
    assert set(tags) <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "span", "table",
                         "thead", "tbody", "tr", "th", "td", "div", "figure", "img", "figcaption", "section", "ul",
                         "li", "details", "summary"}
    # the summary's sentences name the hostile models as text too
    assert "<li class=verdict>&lt;script&gt;alert(1)&lt;/script&gt; and &quot;&#x27;&gt;&lt;img" in text


def test_template_is_autoescaped_and_strict():
    environment = report._template().environment
    assert environment.autoescape is True
    assert environment.undefined.__name__ == "StrictUndefined"
