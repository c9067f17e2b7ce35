"""One self-contained HTML evaluation report (inline CSS, images as base64 data URIs, no external
resources, no script). This module shapes what goes into the page; templates/report.html.j2 holds the
markup and is rendered by Jinja2 with autoescape, so every value lands in the page as text.

The page opens with the answer (`_summary`): one sentence per paired comparison ("fusion beats small_cnn
by +0.029 mean AUROC [0.007, 0.054]"), the headline chart (plots.headline_chart: each model's mean AUROC
and each paired difference, with CIs) and a strip of overlay thumbnails of hits and misses. Every detailed
section follows closed in a <details> a reader opens; the print stylesheet opens them all.

The `metrics` dict that write_report and format_comparison_table read (every part optional unless
marked; jobs/evaluate.py builds it, mostly from classification.summarize_model):

    {
      "split": "test",                      # the evaluated split, named in every column label
      "dataset": "synthetic",               # "synthetic" or "real"
      "split_hash": "...",                  # optional, shown in the header
      "data_split": {"kind": "random", "val_fraction": 0.1, "test_fraction": 0.2, "seed": 0, ...},
                                            # optional: the kind of split of the rows (data.manifest.manifest_split,
                                            # or just "official" / "random"), shown in the header; the reference
                                            # columns on the same kind of split come first, the others are marked
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
          "localization_protocols": {key: {"label", "result", "ci", ...}},  # evaluation.evaluate._localize
        }
      },
      "paired": [{"model_a": name, "model_b": name, "result": paired_bootstrap_difference(...)}],
      "chance_localization": chance_localization(...),
      "notes": ["free text", ...],
    }
"""
from __future__ import annotations

import datetime as _dt
import functools
import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jinja2
import markupsafe

from thorax_ray import storage
from thorax_ray.evaluation.comparison import (format_ci, format_number, model_label, models_of, reference_columns,
                                              reference_match, reference_note, run_split, split_line)
from thorax_ray.evaluation.embed import data_uri
from thorax_ray.evaluation.localization import mean_accuracy
from thorax_ray.evaluation.references import (MEAN_ROW, REFERENCE_AUROC, REFERENCE_LOCALIZATION_IOBB,
                                              REFERENCE_LOCALIZATION_LABEL, REFERENCE_LOCALIZATION_SPLIT)
from thorax_ray.evaluation.report_summary import pairs, source, summary
from thorax_ray.labels import BOXED_FINDINGS, FINDINGS

TEMPLATE = "report.html.j2"


def _escape(value) -> markupsafe.Markup:
    """Every `{{ value }}` of the template as the standard library escapes it (`'` as `&#x27;`, as the
    report always wrote it); autoescape then keeps it as it is. Markup (a macro's output) passes through."""
    if isinstance(value, markupsafe.Markup):
        return value
    return markupsafe.Markup(html.escape(str(value), quote=True))


@functools.cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")),
        autoescape=True, undefined=jinja2.StrictUndefined, finalize=_escape, keep_trailing_newline=True)
    return environment.get_template(TEMPLATE)


# -------------------------------------------------------------------------------------------- helpers

@dataclass(frozen=True)
class Cell:
    """A table cell: `text`, then `ci` in a grey span (no span when None)."""

    text: str
    ci: str | None = None


def _p(value) -> str:
    if value is None:
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence], *, ref_columns: Sequence[int] = (),
           row_classes: Sequence[str] | None = None, other_columns: Sequence[int] = ()) -> dict:
    """A table for the template: header texts, rows of Cells (other values become their text), a class
    per row ("" for none), the indexes of the reference columns and of those among them on another kind
    of split than the run's."""
    return {"header": [str(h) for h in header],
            "rows": [[c if isinstance(c, Cell) else Cell(str(c)) for c in row] for row in rows],
            "row_classes": list(row_classes) if row_classes else [""] * len(rows),
            "ref_columns": list(ref_columns), "other_columns": list(other_columns)}


def _with_mean(findings: Sequence[str]) -> tuple[list[str], list[str]]:
    """The findings and the mean row, and their row classes."""
    rows = list(findings) + [MEAN_ROW]
    return rows, ["mean" if f == MEAN_ROW else "" for f in rows]


def _figures(images: Mapping[str, object] | None, endpoint_url: str | None = None) -> list[dict]:
    return [{"caption": str(caption), "src": data_uri(source(src), endpoint_url)}
            for caption, src in (images or {}).items()]


# ------------------------------------------------------------------------------------------ sections

def _headline(metrics: Mapping) -> dict:
    models = models_of(metrics)
    labels = [model_label(n, e, metrics) for n, e in models.items()]
    first = next(iter(models.values()))
    positives = first.get("positives") or {}
    references = reference_columns(metrics)
    header = (["finding", "positives"] + [f"{lab}: AUROC [95% CI]" for lab in labels]
              + [f"{ref} [{reference_note(ref, metrics)}]" for ref in references])
    findings, classes = _with_mean(FINDINGS)
    rows = []
    for f in findings:
        row = [f, format_number(positives.get(f)) if f != MEAN_ROW else ""]
        for entry in models.values():
            value = entry.get("mean_auroc") if f == MEAN_ROW else (entry.get("auroc") or {}).get(f)
            row.append(Cell(format_number(value), format_ci((entry.get("auroc_ci") or {}).get(f))))
        row += [format_number(REFERENCE_AUROC[ref].get(f), 4) for ref in references]
        rows.append(row)
    first_ref = 2 + len(labels)
    other = [first_ref + k for k, ref in enumerate(references) if reference_match(ref, metrics) is False]
    return {"table": _table(header, rows, ref_columns=range(first_ref, len(header)), row_classes=classes,
                            other_columns=other),
            "mean_note": _mean_note(models, metrics, "auroc_ci_resamples", "AUROC"),
            "split_note": _split_note(metrics),
            "hint": f"{len(FINDINGS)} findings x {len(labels)} models, {len(references)} published columns"}


def _split_note(metrics: Mapping) -> str:
    """Which reference columns used the run's kind of split (comparable in kind) and which did not."""
    run = run_split(metrics)
    if run is None:
        return ("The kind of split of this run is not recorded; each reference column names its own split "
                "(official lists or a random patient split), and numbers on different kinds are not comparable.")
    same = [ref for ref in reference_columns(metrics) if reference_match(ref, metrics)]
    other = [ref for ref in reference_columns(metrics) if reference_match(ref, metrics) is False]
    return (f"This run: {split_line(metrics)}. Reference columns on the same kind of split ({run['kind']}): "
            + ("; ".join(same) or "none") + ". On another kind of split (greyed; not like-for-like): "
            + ("; ".join(other) or "none") + ".")


def _mean_note(models: Mapping, metrics: Mapping, key: str, what: str) -> dict:
    """Which classes and how many resamples each model's mean CI is over ("" : no note)."""
    parts = []
    for name, entry in models.items():
        counts = entry.get(key)
        if counts:
            parts.append(f"{model_label(name, entry, metrics)}: over the {counts['classes']} findings with positives "
                         f"(and negatives) in the split, from {counts['used']} of {counts['of']} resamples (the "
                         "others lack one of them)")
    return {"what": what, "parts": "; ".join(parts)}


def _average_precision(metrics: Mapping) -> dict | None:
    models = models_of(metrics)
    if not any(e.get("average_precision") for e in models.values()):
        return None
    header = ["finding"] + [f"{model_label(n, e, metrics)}: AP [95% CI]" for n, e in models.items()]
    findings, classes = _with_mean(FINDINGS)
    rows = []
    for f in findings:
        row = [f]
        for entry in models.values():
            value = (entry.get("mean_average_precision") if f == MEAN_ROW
                     else (entry.get("average_precision") or {}).get(f))
            row.append(Cell(format_number(value), format_ci((entry.get("average_precision_ci") or {}).get(f))))
        rows.append(row)
    return {"table": _table(header, rows, row_classes=classes),
            "mean_note": _mean_note(models, metrics, "average_precision_ci_resamples", "AP")}


def _paired(metrics: Mapping) -> list[dict]:
    """One table per pair of models: both AUROCs, their difference with its CI and p-value."""
    models = metrics.get("models") or {}
    header = ["finding", "AUROC a", "AUROC b", "delta (a - b)", "95% CI of delta", "p (two-sided)"]
    findings, classes = _with_mean(FINDINGS)
    tables = []
    for a, b, result in pairs(metrics):
        rows = []
        for f in findings:
            r = result.get(f) or {}
            rows.append([f, format_number(r.get("auroc_a")), format_number(r.get("auroc_b")),
                         format_number(r.get("delta")), format_ci(r.get("ci")) or "n/a", _p(r.get("p_value"))])
        tables.append({"label_a": model_label(a, models[a], metrics) if a in models else str(a),
                      "label_b": model_label(b, models[b], metrics) if b in models else str(b),
                       "table": _table(header, rows, row_classes=classes)})
    return tables


def _subgroups(metrics: Mapping, key: str, title: str) -> dict | None:
    """AUROC per subgroup (`key`: "view_position" or "follow_up"), one table per model that has them."""
    groups_by_model = []
    for name, entry in models_of(metrics).items():
        groups = entry.get(key) or {}
        if not groups:
            continue
        header = ["finding"] + [f"{g} (n = {v.get('n')})" for g, v in groups.items()]
        findings, classes = _with_mean(FINDINGS)
        rows = []
        for f in findings:
            cells = []
            for v in groups.values():
                value = v.get("mean_auroc") if f == MEAN_ROW else (v.get("auroc") or {}).get(f)
                pos = (v.get("positives") or {}).get(f)
                cells.append(format_number(value) + (f" ({pos} pos)" if pos is not None else ""))
            rows.append([f] + cells)
        groups_by_model.append({"label": model_label(name, entry, metrics),
                                "table": _table(header, rows, row_classes=classes)})
    return {"title": title, "models": groups_by_model} if groups_by_model else None


def _thresholds(metrics: Mapping) -> list[dict]:
    """Each model's operating points (chosen on validation) applied to the evaluated split."""
    header = ["finding", "threshold", "sensitivity", "specificity", "precision", "F1", "TP / FP / TN / FN"]
    models = []
    for name, entry in models_of(metrics).items():
        tm = entry.get("threshold_metrics") or {}
        if not tm:
            continue
        rows = []
        for f in FINDINGS:
            m = tm.get(f) or {}
            counts = " / ".join(format_number(m.get(k)) for k in ("tp", "fp", "tn", "fn"))
            rows.append([f, *(format_number(m.get(k)) for k in ("threshold", "sensitivity", "specificity",
                                                                  "precision", "f1")), counts])
        models.append({"label": model_label(name, entry, metrics), "rule": str(entry.get("threshold_rule", "")),
                       "split": str(metrics.get("split", "test")), "table": _table(header, rows)})
    return models


def _loc_row(result: Mapping, measure: str, key: str, ci: Mapping | None = None) -> list[Cell]:
    """Cells of one accuracy row: each finding and the mean, with its CI when `ci` has one."""
    values = [(result.get(f) or {}).get(measure, {}).get(key) for f in BOXED_FINDINGS]
    values.append(mean_accuracy(result, measure).get(key))
    intervals = [((ci or {}).get(f) or {}).get(key) for f in (*BOXED_FINDINGS, MEAN_ROW)]
    return [Cell(format_number(v), format_ci(c)) if c else Cell(format_number(v)) for v, c in zip(values, intervals)]


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


def _accuracy_table(sources: list, measure: str, keys: list[str], split_kind: str) -> dict:
    """Localization accuracy by threshold T of one measure: a row per source (and Wang's published row
    under each IoBB threshold it reports, labelled with `split_kind`: its kind of split beside the run's)."""
    rows, classes = [], []
    for key in keys:
        for label, result, ci in sources:
            rows.append([f"{_MEASURE[measure]} > {key}", label] + _loc_row(result, measure, key,
                                                                         ci if measure == "iobb" else None))
            classes.append("")
        if measure == "iobb" and key in REFERENCE_LOCALIZATION_IOBB:
            values = [REFERENCE_LOCALIZATION_IOBB[key].get(f) for f in BOXED_FINDINGS]
            rows.append([f"IoBB > {key}", Cell("", f"{REFERENCE_LOCALIZATION_LABEL}; {split_kind}")]
                        + [format_number(v) for v in values] + [format_number(sum(values) / len(values))])
            classes.append("ref")
    return _table(["T", "source", *BOXED_FINDINGS, "mean"], rows, row_classes=classes)


def _localization(metrics: Mapping) -> dict | None:
    models = {n: e for n, e in models_of(metrics).items() if e.get("localization")}
    if not models:
        return None
    sources = _loc_sources(models, metrics)
    run = run_split(metrics)
    split_kind = f"{REFERENCE_LOCALIZATION_SPLIT} split" + (
        "" if run is None else ": the same kind as this run" if run["kind"] == REFERENCE_LOCALIZATION_SPLIT
        else f": not this run's kind ({run['kind']}), not like-for-like")
    first = next(iter(models.values()))["localization"]
    keys = {measure: list(next(iter(first.values()))[measure]) if first else [] for measure in _MEASURE}
    counts = [["ground-truth boxes"] + [format_number((first.get(f) or {}).get("n")) for f in BOXED_FINDINGS]]
    fp_rows = []
    for label, result, ci in sources:
        if ci is None and label in _CHANCE_LABELS.values():
            continue
        for key in keys["iobb"]:
            values = [((result.get(f) or {}).get("avg_false_positives") or {}).get("iobb", {}).get(key)
                      for f in BOXED_FINDINGS]
            fp_rows.append([f"IoBB > {key}", label] + [format_number(v, 2) for v in values])
    return {"counts": _table(["", *BOXED_FINDINGS], counts),
            "measures": [{"name": _MEASURE[m], "table": _accuracy_table(sources, m, keys[m], split_kind)}
                         for m in _MEASURE],
            "false_positives": _table(["T", "source", *BOXED_FINDINGS], fp_rows)}


def _extra(sections: Sequence[Mapping] | None, endpoint_url: str | None = None) -> list[dict]:
    extra = []
    for section in sections or ():
        table = section.get("table")
        extra.append({"title": str(section.get("title", "")),
                      "paragraphs": str(section["text"]).split("\n\n") if section.get("text") else [],
                      "table": _table([str(c) for c in table["columns"]], table["rows"]) if table else None,
                      "images": _figures(section.get("images"), endpoint_url)})
    return extra


def _facts(metrics: Mapping) -> str:
    """The header line: dataset, split, kind of split, sizes, split hash and when the report was written."""
    first = next(iter(models_of(metrics).values()))
    facts = [f"dataset: {metrics.get('dataset', 'synthetic')}", f"split: {metrics.get('split', 'test')}",
             split_line(metrics)]
    if first.get("n_images") is not None:
        facts.append(f"images: {first['n_images']}")
    if first.get("n_patients") is not None:
        facts.append(f"patients: {first['n_patients']}")
    if metrics.get("split_hash"):
        facts.append(f"split hash: {metrics['split_hash']}")
    facts.append("written: " + _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    return " | ".join(facts)


# ---------------------------------------------------------------------------------------------- API

def report_html(metrics: Mapping, *, title: str = "thorax-ray evaluation",
                images: Mapping[str, object] | None = None, overlays: Mapping[str, object] | None = None,
                sections: Sequence[Mapping] | None = None, endpoint_url: str | None = None) -> str:
    """The report as one HTML document (the arguments as write_report's)."""
    return _template().render(
        title=str(title), facts=_facts(metrics), summary=summary(metrics, overlays, endpoint_url),
        notes=[str(n) for n in metrics.get("notes") or ()],
        split=str(metrics.get("split", "test")), headline=_headline(metrics), paired=_paired(metrics),
        view_position=_subgroups(metrics, "view_position", "AUROC by view position"),
        follow_up=_subgroups(metrics, "follow_up", "AUROC by follow-up # bucket"),
        thresholds=_thresholds(metrics), average_precision=_average_precision(metrics),
        localization=_localization(metrics), images=_figures(images, endpoint_url),
        overlays=_figures(overlays, endpoint_url), sections=_extra(sections, endpoint_url))


def write_report(path, metrics: Mapping, *, title: str = "thorax-ray evaluation",
                 images: Mapping[str, object] | None = None, overlays: Mapping[str, object] | None = None,
                 sections: Sequence[Mapping] | None = None, endpoint_url: str | None = None) -> str:
    """Writes ONE self-contained HTML file (a local path or s3:// URI) and returns its path.

    metrics: the dict described in this module's docstring.
    images: caption -> PNG path or URI (or PNG bytes), e.g. ROC/PR/AUROC-comparison plots; embedded as data URIs.
    overlays: caption -> PNG path of heatmap overlays (plots.plot_heatmap_overlay), embedded likewise; an
        Overlay instead of a path also says what the overlay shows, so the summary's strip shows hits and
        misses (without Overlays it shows the first few).
    sections: extra sections appended at the end, each {"title", "text"?, "table"?: {"columns", "rows"},
        "images"?: {caption: path}}.
    All text is HTML-escaped (the template is autoescaped); the page loads nothing from anywhere.
    """
    path = os.fspath(path)
    storage.write_text(path, report_html(metrics, title=title, images=images, overlays=overlays, sections=sections,
                                         endpoint_url=endpoint_url), endpoint_url=endpoint_url)
    return path
