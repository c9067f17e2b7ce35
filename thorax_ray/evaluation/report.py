"""One self-contained HTML evaluation report (inline CSS, images as base64 data URIs, no external
resources) and a plain-text headline table for the terminal.

The `metrics` dict that write_report and format_comparison_table read (every part optional unless
marked; jobs/evaluate.py builds it, mostly from classification.summarize_model):

    {
      "split": "test",                      # the evaluated split, named in every column label
      "dataset": "synthetic",               # "synthetic" or "real"
      "split_hash": "...",                  # optional, shown in the header
      "models": {                           # required; insertion order = column order
        name: {
          "label": optional column label (default "<name> (<init>[; <features>]; <dataset>, <split> split)"),
          "init": how the model was initialised ("ImageNet init", "random init", ...),
          "metadata_features": [feature, ...] of models that read metadata,
          "n_images", "n_patients", "positives": {finding: int},
          "auroc": {finding: float | None}, "mean_auroc": float | None,
          "auroc_ci": {finding | "mean": [lo, hi] | None},        # bootstrap_auroc_ci
          "auroc_ci_resamples": {"used", "of", "classes"},       # the mean's CI
          "average_precision": {finding: float | None}, "mean_average_precision",
          "average_precision_ci": {finding | "mean": [lo, hi] | None}, "average_precision_ci_resamples",
          "follow_up": {bucket: {...}},                          # subgroup_auroc by Follow-up # bucket
          "threshold_rule": "youden", "thresholds": {finding: float | None},
          "threshold_metrics": {finding: {...}},                 # threshold_metrics
          "view_position": {"AP": {...}, "PA": {...}},           # subgroup_auroc
          "localization": {finding: {...}},                      # localization_accuracy (Wang's protocol)
          "localization_protocols": {key: {"label", "result", "ci", ...}},  # evaluation.run._localize
        }
      },
      "paired": [{"model_a": name, "model_b": name, "result": paired_bootstrap_difference(...)}],
      "chance_localization": chance_localization(...),
      "notes": ["free text", ...],
    }
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import os
from collections.abc import Mapping, Sequence

from thorax_ray.evaluation.comparison import format_ci, format_number, model_label, models_of
from thorax_ray.evaluation.localization import mean_accuracy
from thorax_ray.evaluation.references import (MEAN_ROW, REFERENCE_AUROC, REFERENCE_LOCALIZATION_IOBB,
                                              REFERENCE_LOCALIZATION_LABEL)
from thorax_ray.labels import BOXED_FINDINGS, FINDINGS

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".svg": "image/svg+xml"}

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em auto; max-width: 1400px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .25em .55em; text-align: right; vertical-align: top; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
td.ref, th.ref { background: #f7f7fb; color: #444; }
tr.mean td { font-weight: bold; border-top: 2px solid #888; }
tr.ref td { background: #f7f7fb; color: #444; font-style: italic; }
.ci { color: #666; font-size: .9em; } .note { color: #555; font-size: .9em; }
figure { display: inline-block; margin: .5em; vertical-align: top; } figcaption { font-size: .85em; color: #444; }
img { max-width: 100%; border: 1px solid #ddd; }
.overlays img { max-width: 360px; }
"""


# -------------------------------------------------------------------------------------------- helpers

def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _p(value) -> str:
    if value is None:
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, raw: bool = False,
           ref_columns: Sequence[int] = (), row_classes: Sequence[str] | None = None) -> str:
    """HTML table; cells are escaped unless `raw` (then they must already be escaped)."""
    cell = (lambda v: v) if raw else _e
    head = "".join(f'<th{" class=ref" if i in ref_columns else ""}>{_e(h)}</th>' for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{_e(row_classes[r])}"' if row_classes and row_classes[r] else ""
        cells = "".join(f'<td{" class=ref" if i in ref_columns else ""}>{cell(v)}</td>' for i, v in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _data_uri(image) -> str:
    if isinstance(image, (bytes, bytearray)):
        data, mime = bytes(image), "image/png"
    else:
        path = os.fspath(image)
        mime = _MIME.get(os.path.splitext(path)[1].lower())
        if mime is None:
            raise ValueError(f"{path}: not an image this report embeds ({', '.join(_MIME)})")
        with open(path, "rb") as handle:
            data = handle.read()
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _figures(images: Mapping[str, object] | None, css_class: str = "") -> str:
    if not images:
        return ""
    figures = [f'<figure><img src="{_data_uri(src)}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'
               for caption, src in images.items()]
    return f'<div class="{_e(css_class)}">{"".join(figures)}</div>'


# ------------------------------------------------------------------------------------------ sections

def _headline(metrics: Mapping) -> str:
    models = models_of(metrics)
    labels = [model_label(n, e, metrics) for n, e in models.items()]
    first = next(iter(models.values()))
    positives = first.get("positives") or {}
    header = ["finding", "positives"] + [f"{lab}: AUROC [95% CI]" for lab in labels] + list(REFERENCE_AUROC)
    ref_cols = list(range(2 + len(labels), len(header)))
    rows, classes = [], []
    for f in list(FINDINGS) + [MEAN_ROW]:
        row = [_e(f), _e(format_number(positives.get(f)) if f != MEAN_ROW else "")]
        for entry in models.values():
            value = entry.get("mean_auroc") if f == MEAN_ROW else (entry.get("auroc") or {}).get(f)
            ci = (entry.get("auroc_ci") or {}).get(f)
            row.append(f'{_e(format_number(value))} <span class="ci">{_e(format_ci(ci))}</span>')
        row += [_e(format_number(ref.get(f), 4)) for ref in REFERENCE_AUROC.values()]
        rows.append(row)
        classes.append("mean" if f == MEAN_ROW else "")
    note = ("<p class=note>Our columns: AUROC on the named split, 95% CI from a patient-level bootstrap "
            "(patients resampled with replacement, all their images kept). Reference columns are published "
            "numbers on the real NIH ChestX-ray14 data with the split named in the column; they are context, "
            "not a like-for-like comparison when our data or split differ. n/a: the split has no positives "
            "(or no negatives) of the finding.</p>" + _mean_note(models, metrics, "auroc_ci_resamples", "AUROC"))
    return _table(header, rows, raw=True, ref_columns=ref_cols, row_classes=classes) + note


def _mean_note(models: Mapping, metrics: Mapping, key: str, what: str) -> str:
    """Which classes and how many resamples each model's mean CI is over."""
    parts = []
    for name, entry in models.items():
        counts = entry.get(key)
        if counts:
            parts.append(f"{model_label(name, entry, metrics)}: over the {counts['classes']} findings with positives "
                         f"(and negatives) in the split, from {counts['used']} of {counts['of']} resamples (the "
                         "others lack one of them)")
    if not parts:
        return ""
    return (f"<p class=note>Mean {_e(what)} and its CI are always over the same findings: "
            + _e("; ".join(parts)) + ".</p>")


def _average_precision(metrics: Mapping) -> str:
    models = models_of(metrics)
    if not any(e.get("average_precision") for e in models.values()):
        return ""
    header = ["finding"] + [f"{model_label(n, e, metrics)}: AP [95% CI]" for n, e in models.items()]
    rows, classes = [], []
    for f in list(FINDINGS) + [MEAN_ROW]:
        row = [_e(f)]
        for entry in models.values():
            value = (entry.get("mean_average_precision") if f == MEAN_ROW
                     else (entry.get("average_precision") or {}).get(f))
            ci = (entry.get("average_precision_ci") or {}).get(f)
            row.append(f'{_e(format_number(value))} <span class="ci">{_e(format_ci(ci))}</span>')
        rows.append(row)
        classes.append("mean" if f == MEAN_ROW else "")
    return ("<h2>Average precision</h2>" + _table(header, rows, raw=True, row_classes=classes)
            + "<p class=note>95% CI from the same patient bootstrap as the AUROC.</p>"
            + _mean_note(models, metrics, "average_precision_ci_resamples", "AP"))


def _paired(metrics: Mapping) -> str:
    paired = metrics.get("paired") or []
    if isinstance(paired, Mapping):
        paired = [{"model_a": k, "model_b": "", "result": v} for k, v in paired.items()]
    if not paired:
        return ""
    models = metrics.get("models") or {}
    parts = ["<h2>Paired comparison (same patient resamples for both models)</h2>"]
    for item in paired:
        a, b, result = item.get("model_a", ""), item.get("model_b", ""), item.get("result") or {}
        label_a = model_label(a, models[a], metrics) if a in models else str(a)
        label_b = model_label(b, models[b], metrics) if b in models else str(b)
        parts.append(f"<h3>{_e(label_a)} minus {_e(label_b)}</h3>")
        rows, classes = [], []
        for f in list(FINDINGS) + [MEAN_ROW]:
            r = result.get(f) or {}
            rows.append([f, format_number(r.get("auroc_a")), format_number(r.get("auroc_b")), format_number(r.get("delta")), format_ci(r.get("ci")) or "n/a",
                         _p(r.get("p_value"))])
            classes.append("mean" if f == MEAN_ROW else "")
        parts.append(_table(["finding", "AUROC a", "AUROC b", "delta (a - b)", "95% CI of delta", "p (two-sided)"],
                            rows, row_classes=classes))
    parts.append("<p class=note>p: two-sided paired bootstrap p-value for no difference; not corrected for the "
                 "14 comparisons.</p>")
    return "".join(parts)


def _view_position(metrics: Mapping) -> str:
    return _subgroups(metrics, "view_position", "AUROC by view position")


def _follow_up(metrics: Mapping) -> str:
    section = _subgroups(metrics, "follow_up", "AUROC by follow-up # bucket")
    note = ("<p class=note>Follow-up # counts a patient's earlier films: a proxy of care intensity, not of what "
            "the image shows. Compare the metadata model with and without it (two columns above, scored "
            "separately) to see how much of its AUROC comes from it.</p>")
    return section + note if section else ""


def _subgroups(metrics: Mapping, key: str, title: str) -> str:
    models = models_of(metrics)
    parts = []
    for name, entry in models.items():
        groups = entry.get(key) or {}
        if not groups:
            continue
        parts.append(f"<h3>{_e(model_label(name, entry, metrics))}</h3>")
        header = ["finding"] + [f"{g} (n = {v.get('n')})" for g, v in groups.items()]
        rows, classes = [], []
        for f in list(FINDINGS) + [MEAN_ROW]:
            cells = []
            for v in groups.values():
                value = v.get("mean_auroc") if f == MEAN_ROW else (v.get("auroc") or {}).get(f)
                pos = (v.get("positives") or {}).get(f)
                cells.append(format_number(value) + (f" ({pos} pos)" if pos is not None else ""))
            rows.append([f] + cells)
            classes.append("mean" if f == MEAN_ROW else "")
        parts.append(_table(header, rows, row_classes=classes))
    return f"<h2>{_e(title)}</h2>" + "".join(parts) if parts else ""


def _thresholds(metrics: Mapping) -> str:
    models = models_of(metrics)
    parts = []
    for name, entry in models.items():
        tm = entry.get("threshold_metrics") or {}
        if not tm:
            continue
        rule = entry.get("threshold_rule", "")
        parts.append(f"<h3>{_e(model_label(name, entry, metrics))}: thresholds chosen on validation "
                     f"({_e(rule)}), applied to the {_e(metrics.get('split', 'test'))} split</h3>")
        rows = []
        for f in FINDINGS:
            m = tm.get(f) or {}
            rows.append([f, format_number(m.get("threshold")), format_number(m.get("sensitivity")), format_number(m.get("specificity")),
                         format_number(m.get("precision")), format_number(m.get("f1")),
                         " / ".join(format_number(m.get(k)) for k in ("tp", "fp", "tn", "fn"))])
        parts.append(_table(["finding", "threshold", "sensitivity", "specificity", "precision", "F1", "TP / FP / TN / FN"], rows))
    return "<h2>Operating thresholds</h2>" + "".join(parts) if parts else ""


def _loc_row(result: Mapping, measure: str, key: str, ci: Mapping | None = None) -> list[str]:
    """Cells of one accuracy row (escaped): each finding and the mean, with its CI when `ci` has one."""
    values = [(result.get(f) or {}).get(measure, {}).get(key) for f in BOXED_FINDINGS]
    values.append(mean_accuracy(result, measure).get(key))
    intervals = [((ci or {}).get(f) or {}).get(key) for f in (*BOXED_FINDINGS, MEAN_ROW)]
    return [f'{_e(format_number(v))} <span class="ci">{_e(format_ci(c))}</span>' if c else _e(format_number(v))
            for v, c in zip(values, intervals)]


_MEASURE = {"iobb": "IoBB", "iou": "IoU"}
_CHANCE_LABELS = {"whole_image": "chance: one whole-image box", "median_box": "chance: the class's median box"}


def _loc_sources(models: Mapping, metrics: Mapping) -> list[tuple[str, Mapping, Mapping | None]]:
    """(label, result, IoBB CIs) per model and protocol (each label says which map method, resolution,
    thresholds and gate produced it), then the chance baselines."""
    sources = []
    for name, entry in models.items():
        protocols = entry.get("localization_protocols") or {
            "wang2017": {"label": "Wang et al. 2017 protocol", "result": entry["localization"]}}
        for protocol in protocols.values():
            sources.append((f"{model_label(name, entry, metrics)}; {protocol.get('label', '')}", protocol["result"],
                            protocol.get("ci")))
    chance = metrics.get("chance_localization") or {}
    return sources + [(_CHANCE_LABELS.get(k, f"chance: {k}"), v, None) for k, v in chance.items()]


def _localization(metrics: Mapping) -> str:
    models = {n: e for n, e in models_of(metrics).items() if e.get("localization")}
    if not models:
        return ""
    sources = _loc_sources(models, metrics)
    first = next(iter(models.values()))["localization"]
    iobb_keys = list(next(iter(first.values()))["iobb"]) if first else []
    iou_keys = list(next(iter(first.values()))["iou"]) if first else []
    header = ["T", "source"] + list(BOXED_FINDINGS) + ["mean"]

    parts = ["<h2>Localization</h2>",
             "<p class=note>A ground-truth box counts as localized at T when any predicted box of its class on the "
             "image has IoBB = area(pred &amp; truth) / area(pred) (or IoU) above T; accuracy = localized boxes / "
             "ground-truth boxes, [95% CI] from the patient bootstrap. Each row names what produced it: Wang et "
             "al. 2017's protocol (the stored heatmap of every annotated (image, finding), normalised to 0..255, "
             "thresholded at 60 and at 180, a box around every isolated region, whatever the probability) or the "
             "boxes as the scoring job wrote them (its gate, threshold and region count). Chance rows predict one "
             "box per annotated image without looking at it.</p>"]
    counts = [["ground-truth boxes"] + [format_number((first.get(f) or {}).get("n")) for f in BOXED_FINDINGS]]
    parts.append(_table(["", *BOXED_FINDINGS], counts))
    for measure, keys in (("iobb", iobb_keys), ("iou", iou_keys)):
        rows, classes = [], []
        for key in keys:
            for label, result, ci in sources:
                rows.append([f"{_MEASURE[measure]} &gt; {_e(key)}", _e(label)]
                            + _loc_row(result, measure, key, ci if measure == "iobb" else None))
                classes.append("")
            if measure == "iobb" and key in REFERENCE_LOCALIZATION_IOBB:
                ref = REFERENCE_LOCALIZATION_IOBB[key]
                vals = [ref.get(f) for f in BOXED_FINDINGS]
                rows.append([f"IoBB &gt; {_e(key)}", f'<span class="ci">{_e(REFERENCE_LOCALIZATION_LABEL)}</span>']
                            + [_e(format_number(v)) for v in vals] + [_e(format_number(sum(vals) / len(vals)))])
                classes.append("ref")
        parts.append(f"<h3>Accuracy by T({_MEASURE[measure]})</h3>")
        parts.append(_table(header, rows, raw=True, row_classes=classes))
    fp_rows = []
    for label, result, ci in sources:
        if ci is None and label in _CHANCE_LABELS.values():
            continue
        for key in iobb_keys:
            values = [((result.get(f) or {}).get("avg_false_positives") or {}).get("iobb", {}).get(key) for f in BOXED_FINDINGS]
            fp_rows.append([f"IoBB > {key}", label] + [format_number(v, 2) for v in values])
    parts.append("<h3>Average false positives per annotated (image, class)</h3>")
    parts.append(_table(["T", "source", *BOXED_FINDINGS], fp_rows))
    return "".join(parts)


def _extra(sections: Sequence[Mapping] | None) -> str:
    parts = []
    for section in sections or ():
        parts.append(f"<h2>{_e(section.get('title', ''))}</h2>")
        if section.get("text"):
            parts.append("".join(f"<p>{_e(p)}</p>" for p in str(section["text"]).split("\n\n")))
        if section.get("table"):
            table = section["table"]
            parts.append(_table([str(c) for c in table["columns"]], [[str(c) for c in row] for row in table["rows"]]))
        if section.get("images"):
            parts.append(_figures(section["images"]))
    return "".join(parts)


# ---------------------------------------------------------------------------------------------- API

def write_report(path, metrics: Mapping, *, title: str = "thorax-ray evaluation",
                 images: Mapping[str, object] | None = None, overlays: Mapping[str, object] | None = None,
                 sections: Sequence[Mapping] | None = None) -> str:
    """Writes ONE self-contained HTML file and returns its path.

    metrics: the dict described in this module's docstring.
    images: caption -> PNG path (or PNG bytes), e.g. ROC/PR/AUROC-comparison plots; embedded as data URIs.
    overlays: caption -> PNG path of heatmap overlays (plots.plot_heatmap_overlay), embedded likewise.
    sections: extra sections appended at the end, each {"title", "text"?, "table"?: {"columns", "rows"},
        "images"?: {caption: path}}.
    All text is HTML-escaped; the page loads nothing from anywhere.
    """
    models = models_of(metrics)
    split, dataset = metrics.get("split", "test"), metrics.get("dataset", "synthetic")
    first = next(iter(models.values()))
    facts = [f"dataset: {dataset}", f"split: {split}"]
    if first.get("n_images") is not None:
        facts.append(f"images: {first['n_images']}")
    if first.get("n_patients") is not None:
        facts.append(f"patients: {first['n_patients']}")
    if metrics.get("split_hash"):
        facts.append(f"split hash: {metrics['split_hash']}")
    facts.append("written: " + _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    body = [f"<h1>{_e(title)}</h1>", f"<p class=note>{_e(' | '.join(facts))}</p>"]
    body += [f"<p class=note>{_e(n)}</p>" for n in metrics.get("notes") or ()]
    body.append(f"<h2>AUROC per finding ({_e(split)} split) and published references</h2>")
    body.append(_headline(metrics))
    body.append(_paired(metrics))
    body.append(_view_position(metrics))
    body.append(_follow_up(metrics))
    body.append(_thresholds(metrics))
    body.append(_average_precision(metrics))
    body.append(_localization(metrics))
    if images:
        body.append(f"<h2>Curves ({_e(split)} split)</h2>" + _figures(images))
    if overlays:
        body.append("<h2>Heatmap overlays</h2>" + _figures(overlays, "overlays"))
    body.append(_extra(sections))
    document = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
                + "\n".join(part for part in body if part) + "\n</body></html>\n")
    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(document)
    return path


