"""Evaluation figures as PNG files, local or s3:// (matplotlib, Agg backend, imported inside the functions
so that importing this module costs nothing and never needs a display)."""
from __future__ import annotations

import io
import math
import os
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np

from thorax_ray import storage
from thorax_ray.evaluation.comparison import BEATS, TRAILS, reference_note, run_split, verdict
from thorax_ray.evaluation.references import MEAN_ROW, REFERENCE_AUROC
from thorax_ray.labels import FINDINGS

_DPI = 90
_PNG_METADATA = {"Software": None}


def _pyplot():
    import matplotlib  # deferred: matplotlib (slow import)

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # deferred: matplotlib (slow import)

    return plt


def _png(fig) -> bytes:
    """The figure as PNG bytes (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=_DPI, format="png", metadata=_PNG_METADATA)
    _pyplot().close(fig)
    return buffer.getvalue()


def _save(fig, path, endpoint_url: str | None = None) -> str:
    """The figure as a PNG at `path` (a local path or s3:// URI, written in one step by storage)."""
    path = os.fspath(path)
    storage.write_bytes(path, _png(fig), endpoint_url=endpoint_url)
    return path


def _check_scores(labels, scores_by_model: Mapping[str, np.ndarray]) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != len(FINDINGS):
        raise ValueError(f"expected (N, {len(FINDINGS)}) labels, got {labels.shape}")
    if not scores_by_model:
        raise ValueError("no models to plot")
    for name, scores in scores_by_model.items():
        if np.shape(scores) != labels.shape:
            raise ValueError(f"model {name!r}: scores of shape {np.shape(scores)}, labels {labels.shape}")
    return labels


def _grid(plt, title: str):
    fig, axes = plt.subplots(4, 4, figsize=(15, 14), constrained_layout=True)
    fig.suptitle(title, fontsize=14)
    for ax in axes.ravel()[len(FINDINGS):]:
        ax.axis("off")
    return fig, axes.ravel()


def _finding_axis(ax, finding: str, y: np.ndarray, xlabel: str, ylabel: str) -> None:
    ax.set_title(f"{finding} (positives {int(y.sum())})", fontsize=10)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)


def plot_roc_curves(labels, scores_by_model: Mapping[str, np.ndarray], path, *, split: str = "test",
                    title: str | None = None, endpoint_url: str | None = None) -> str:
    """One subplot per finding, one ROC curve per model with its AUROC in the legend; a finding
    without positives or negatives says so instead of a curve. Returns `path`."""
    from sklearn.metrics import roc_auc_score, roc_curve  # deferred: scikit-learn (slow import)

    labels = _check_scores(labels, scores_by_model)
    plt = _pyplot()
    fig, axes = _grid(plt, title or f"ROC curves per finding ({split} split, n = {labels.shape[0]} images)")
    for i, (finding, ax) in enumerate(zip(FINDINGS, axes)):
        y = labels[:, i]
        ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1)
        _finding_axis(ax, finding, y, "1 - specificity", "sensitivity")
        if not 0 < y.sum() < len(y):
            ax.text(0.5, 0.5, "undefined:\nno positives or no negatives", ha="center", va="center", fontsize=9)
            continue
        for name, scores in scores_by_model.items():
            s = np.asarray(scores)[:, i]
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, linewidth=1.3, label=f"{name}: AUROC {roc_auc_score(y, s):.3f}")
        ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path, endpoint_url)


def plot_pr_curves(labels, scores_by_model: Mapping[str, np.ndarray], path, *, split: str = "test",
                   title: str | None = None, endpoint_url: str | None = None) -> str:
    """One subplot per finding, one precision-recall curve per model with its average precision in
    the legend and the prevalence (a random model's precision) as a dotted line. Returns `path`."""
    from sklearn.metrics import (average_precision_score,  # deferred: scikit-learn (slow import)
                                 precision_recall_curve)

    labels = _check_scores(labels, scores_by_model)
    plt = _pyplot()
    fig, axes = _grid(plt, title or f"Precision-recall curves per finding ({split} split, n = {labels.shape[0]} images)")
    for i, (finding, ax) in enumerate(zip(FINDINGS, axes)):
        y = labels[:, i]
        _finding_axis(ax, finding, y, "recall", "precision")
        if y.sum() == 0:
            ax.text(0.5, 0.5, "undefined: no positives", ha="center", va="center", fontsize=9)
            continue
        prevalence = float(y.mean())
        ax.axhline(prevalence, color="0.7", linestyle=":", linewidth=1, label=f"prevalence {prevalence:.3f}")
        for name, scores in scores_by_model.items():
            s = np.asarray(scores)[:, i]
            precision, recall, _ = precision_recall_curve(y, s)
            ax.step(recall, precision, where="post", linewidth=1.3,
                    label=f"{name}: AP {average_precision_score(y, s):.3f}")
        ax.legend(loc="upper right", fontsize=7)
    return _save(fig, path, endpoint_url)


def _table_columns(table) -> dict[str, dict[str, float | None]]:
    """dict column -> {finding: value} from such a dict or a DataFrame indexed by finding."""
    if hasattr(table, "to_dict") and hasattr(table, "columns"):
        return {str(c): {str(k): v for k, v in table[c].to_dict().items()} for c in table.columns}
    return {str(c): dict(v) for c, v in table.items()}


def _value(v) -> float:
    return float("nan") if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def plot_auroc_comparison(table, path, *, reference_columns: Sequence[str] | None = None,
                          ci: Mapping[str, Mapping[str, Sequence[float] | None]] | None = None,
                          split: str = "test", title: str | None = None, include_mean: bool = True,
                          data_split: Mapping | str | None = None, endpoint_url: str | None = None) -> str:
    """Grouped bars of AUROC per finding (and the mean, key "mean"), one bar per model column, with
    optional 95% CIs as error bars; reference columns (by default those named in
    report.REFERENCE_AUROC) are drawn as markers, not bars. `table`: column -> {finding: AUROC | None}
    or a DataFrame indexed by finding. `data_split` (the metrics' "data_split", comparison.run_split): the
    run's kind of split, named in the title, each reference's legend entry saying whether it matches.
    Returns `path`."""
    columns = _table_columns(table)
    references = list(reference_columns) if reference_columns is not None else [c for c in columns if c in REFERENCE_AUROC]
    models = [c for c in columns if c not in references]
    rows = list(FINDINGS) + ([MEAN_ROW] if include_mean else [])
    x = np.arange(len(rows))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(16, 6.5), constrained_layout=True)
    width = 0.8 / max(len(models), 1)
    for k, name in enumerate(models):
        values = np.array([_value(columns[name].get(r)) for r in rows])
        offset = x - 0.4 + width * (k + 0.5)
        yerr = None
        if ci and ci.get(name):
            lo = np.array([_value((ci[name].get(r) or [None, None])[0]) for r in rows])
            hi = np.array([_value((ci[name].get(r) or [None, None])[1]) for r in rows])
            # a percentile CI may exclude the point estimate (skewed or few resamples): no bar below 0
            yerr = np.clip(np.vstack([np.nan_to_num(values - lo), np.nan_to_num(hi - values)]), 0.0, None)
        ax.bar(offset, np.nan_to_num(values), width=width * 0.95, yerr=yerr, capsize=2, label=_legend_label(name))
    markers = ["D", "^", "s", "v", "o", "P", "X"]
    run = {"data_split": data_split}
    for k, name in enumerate(references):
        values = np.array([_value(columns[name].get(r)) for r in rows])
        label = f"{name} [{reference_note(name, run)}]" if run_split(run) and name in REFERENCE_AUROC else name
        ax.scatter(x, values, marker=markers[k % len(markers)], s=42, color="black" if k == 0 else None,
                   zorder=5, label=_legend_label(label))
    ax.set_xticks(x)
    ax.set_xticklabels(rows, rotation=35, ha="right", fontsize=9)
    shown = [_value(columns[c].get(r)) for c in columns for r in rows]
    low = min([v for v in shown if not math.isnan(v)] + [0.45])
    ax.set_ylim(max(0.0, math.floor((low - 0.05) * 10) / 10), 1.0)
    ax.axhline(0.5, color="0.6", linestyle=":", linewidth=1)
    ax.set_ylabel("AUROC")
    kind = run_split(run)
    default_title = f"AUROC per finding: our models ({split} split, bars, 95% CI) vs published references (markers)"
    ax.set_title(title or default_title + (f"\nour rows: {kind['kind']} split" if kind else ""))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path, endpoint_url)


_VERDICT_COLOURS = {BEATS: "tab:green", TRAILS: "tab:red"}  # a CI spanning 0 (or none): grey


def _plain_text(label: str) -> str:
    """A label drawn as it is written: "$" would start matplotlib's math text."""
    return str(label).replace("$", r"\$")


def _interval(ax, row: int, value, ci, colour) -> None:
    """A dot at `value` on row `row` with its CI as a whisker (either may be missing)."""
    if ci and ci[0] is not None and ci[1] is not None:
        ax.plot([_value(ci[0]), _value(ci[1])], [row, row], color=colour, linewidth=2.2, solid_capstyle="butt")
    if value is not None:
        ax.plot([_value(value)], [row], "o", color=colour, markersize=7)


def headline_chart(means: Sequence[tuple[str, float | None, Sequence | None]],
                   differences: Sequence[tuple[str, float | None, Sequence | None]], *,
                   split: str = "test") -> bytes:
    """The report's answer to "which model is better", as PNG bytes: on the left each model's mean AUROC
    with its 95% CI (dot and whisker, `means`: (model, mean, [lo, hi] | None)); on the right, when there
    are pairs, each paired difference of mean AUROC a - b with its 95% CI against a line at 0
    (`differences`: ("a - b", delta, [lo, hi] | None)), green when the CI is above 0, red below, grey when
    it spans 0 (comparison.verdict)."""
    if not means:
        raise ValueError("no models to chart")
    plt = _pyplot()
    rows = max(len(means), len(differences))
    panels = 2 if differences else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels + 0.6, 1.25 + 0.34 * rows), constrained_layout=True,
                             squeeze=False)
    ax = axes[0, 0]
    for row, (name, value, ci) in enumerate(means):
        _interval(ax, row, value, ci, "tab:blue")
    ax.set_yticks(range(len(means)))
    ax.set_yticklabels([_plain_text(m[0]) for m in means], fontsize=9)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.axvline(0.5, color="0.6", linestyle=":", linewidth=1)
    ax.set_xlabel(f"mean AUROC ({split} split), 95% CI", fontsize=9)
    ax.set_title("Mean AUROC per model", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="x", labelsize=8)
    if differences:
        ax = axes[0, 1]
        for row, (name, value, ci) in enumerate(differences):
            _interval(ax, row, value, ci, _VERDICT_COLOURS.get(verdict(ci), "0.45"))
        ax.set_yticks(range(len(differences)))
        ax.set_yticklabels([_plain_text(d[0]) for d in differences], fontsize=9)
        ax.set_ylim(rows - 0.5, -0.5)
        ax.axvline(0.0, color="0.3", linewidth=1)
        ax.set_xlabel("mean AUROC of a - b, paired 95% CI", fontsize=9)
        ax.set_title("Paired differences\ngreen: a better, red: b better, grey: CI spans 0", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    return _png(fig)


LEGEND_WIDTH = 90  # characters per legend line: long column labels wrap instead of squeezing the axes


def _legend_label(label: str) -> str:
    return textwrap.fill(label, LEGEND_WIDTH)


def plot_heatmap_overlay(image, heatmap, path, *, truth_boxes: Sequence[Mapping] = (),
                         predicted_boxes: Sequence[Mapping] = (), title: str = "",
                         endpoint_url: str | None = None) -> str:
    """An X-ray (H, W) with a heatmap (any size, stretched over the image) in translucent colour,
    ground-truth boxes in green and predicted boxes in dashed red ({x, y, w, h[, finding, score]} in
    the image's pixel frame). Returns `path`."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle  # deferred: matplotlib (slow import)

    image = np.asarray(image, dtype=np.float64)
    height, width = image.shape[:2]
    fig, ax = plt.subplots(figsize=(5, 5), constrained_layout=True)
    ax.imshow(image, cmap="gray", extent=(0, width, height, 0))
    if heatmap is not None:
        ax.imshow(np.asarray(heatmap, dtype=np.float64), cmap="jet", alpha=0.35, extent=(0, width, height, 0),
                  interpolation="bilinear")
    for boxes, colour, style, prefix in ((truth_boxes, "lime", "-", "truth"), (predicted_boxes, "red", "--", "pred")):
        for box in boxes:
            ax.add_patch(Rectangle((box["x"], box["y"]), box["w"], box["h"], fill=False, edgecolor=colour,
                                   linestyle=style, linewidth=1.5))
            label = box.get("finding", prefix)
            if box.get("score") is not None:
                label = f"{label} {float(box['score']):.2f}"
            ax.text(box["x"], box["y"] - 2, label, color=colour, fontsize=7, va="bottom")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path, endpoint_url)
