"""Our models beside the published references: the AUROC comparison table (for the plot, the terminal and
the report), model labels that name data and split, the kind of split the run used (`run_split`) and which
references used the same kind, and how numbers are written for people."""
from __future__ import annotations

import math
from collections.abc import Mapping

from thorax_ray.data.splits import SPLIT_KINDS, describe_split
from thorax_ray.evaluation.references import MEAN_ROW, REFERENCE_AUROC, REFERENCE_SPLIT
from thorax_ray.labels import FINDINGS


def format_number(value, digits: int = 3) -> str:
    """A metric for people: `digits` decimals, integers as they are, "n/a" for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{float(value):.{digits}f}"


def format_ci(ci) -> str:
    """A confidence interval as "[lo, hi]" ("" when there is none)."""
    if not ci:
        return ""
    return f"[{format_number(ci[0])}, {format_number(ci[1])}]"


FEATURE_NAMES = {"age": "age", "sex": "sex", "view_position": "view position", "follow_up": "follow-up #",
                 "original_size": "original size", "pixel_spacing": "pixel spacing"}


def model_label(name: str, entry: Mapping, metrics: Mapping) -> str:
    """Column label of one of our models: its "label", else "<name> (<init>[; <metadata features>];
    <dataset>, <split> split)" (the init and features parts when the entry has them)."""
    if entry.get("label"):
        return str(entry["label"])
    details = [str(entry["init"])] if entry.get("init") else []
    if entry.get("metadata_features"):
        details.append(", ".join(FEATURE_NAMES.get(f, f) for f in entry["metadata_features"]))
    details.append(f"{metrics.get('dataset', 'synthetic')}, {metrics.get('split', 'test')} split")
    return f"{name} ({'; '.join(details)})"


def models_of(metrics: Mapping) -> dict[str, Mapping]:
    """The metrics' models (ValueError when there are none)."""
    models = metrics.get("models") or {}
    if not models:
        raise ValueError("metrics has no models")
    return dict(models)


def run_split(metrics: Mapping) -> dict | None:
    """The kind of split of the evaluated rows: `metrics["data_split"]`, the manifest's record
    (thorax_ray.data.manifest.manifest_split: {"kind", "val_fraction", "test_fraction", "seed", ...}) or just
    its kind ("official" / "random"); None when the metrics do not record it."""
    value = metrics.get("data_split")
    if isinstance(value, str):
        value = {"kind": value}
    if isinstance(value, Mapping) and value.get("kind") in SPLIT_KINDS:
        return dict(value)
    return None


def split_line(metrics: Mapping) -> str:
    """"split kind: <what the run used>", for the header of every table and of the report."""
    return f"split kind: {describe_split(run_split(metrics))}"


def reference_match(label: str, metrics: Mapping) -> bool | None:
    """Whether the reference column `label` is on the same kind of split as the run (None: unknown)."""
    run, kind = run_split(metrics), REFERENCE_SPLIT.get(label)
    return None if run is None or kind is None else run["kind"] == kind


def reference_note(label: str, metrics: Mapping) -> str:
    """The reference column's kind of split and whether it matches the run's, e.g. "official split: not the
    run's kind (random), not like-for-like"."""
    kind, match = REFERENCE_SPLIT.get(label, "unknown"), reference_match(label, metrics)
    if match is None:
        return f"{kind} split"
    if match:
        return f"{kind} split: the same kind as this run"
    return f"{kind} split: not this run's kind ({run_split(metrics)['kind']}), not like-for-like"


def reference_columns(metrics: Mapping) -> list[str]:
    """REFERENCE_AUROC's columns grouped: those on the run's kind of split first (published order within
    a group; unchanged when the run's kind is not recorded)."""
    return sorted(REFERENCE_AUROC, key=lambda label: reference_match(label, metrics) is False)


def comparison_table(metrics: Mapping, *, references: bool = True) -> dict[str, dict[str, float | None]]:
    """Column label -> {finding and "mean": AUROC}: our models (labelled with dataset and split),
    then the published reference columns (those on the run's kind of split first). Feed it to
    plots.plot_auroc_comparison."""
    table: dict[str, dict[str, float | None]] = {}
    for name, entry in models_of(metrics).items():
        column = {f: (entry.get("auroc") or {}).get(f) for f in FINDINGS}
        column[MEAN_ROW] = entry.get("mean_auroc")
        table[model_label(name, entry, metrics)] = column
    if references:
        table.update({k: dict(REFERENCE_AUROC[k]) for k in reference_columns(metrics)})
    return table


def comparison_ci(metrics: Mapping) -> dict[str, dict]:
    """Column label -> auroc_ci of our models (for plots.plot_auroc_comparison's `ci`)."""
    return {model_label(n, e, metrics): dict(e.get("auroc_ci") or {}) for n, e in models_of(metrics).items()}


def format_comparison_table(metrics: Mapping) -> str:
    """Plain-text headline table for the terminal: AUROC [95% CI] per finding for each model and the
    published references, under a line naming the run's kind of split, with a legend naming every column
    (data set and split; each reference marked as on the run's kind of split or not)."""
    models = models_of(metrics)
    columns: list[tuple[str, list[str]]] = []
    for name, entry in models.items():
        cells = []
        for f in list(FINDINGS) + [MEAN_ROW]:
            value = entry.get("mean_auroc") if f == MEAN_ROW else (entry.get("auroc") or {}).get(f)
            ci = (entry.get("auroc_ci") or {}).get(f)
            cells.append(f"{format_number(value)} {format_ci(ci)}".strip())
        columns.append((model_label(name, entry, metrics), cells))
    references = reference_columns(metrics)
    for label in references:
        ref = REFERENCE_AUROC[label]
        columns.append((label, [format_number(ref.get(f), 4) for f in list(FINDINGS) + [MEAN_ROW]]))
    keys = [f"({i + 1})" for i in range(len(columns))]
    first_width = max(len(f) for f in FINDINGS)
    widths = [max(len(k), *(len(c) for c in cells)) for k, (_, cells) in zip(keys, columns)]
    lines = [split_line(metrics), "",
             "finding".ljust(first_width) + "  " + "  ".join(k.rjust(w) for k, w in zip(keys, widths))]
    rule = "-" * len(lines[-1])
    lines.append(rule)
    for r, f in enumerate(list(FINDINGS) + [MEAN_ROW]):
        if f == MEAN_ROW:
            lines.append(rule)
        lines.append(f.ljust(first_width) + "  " + "  ".join(cells[r].rjust(w) for (_, cells), w in zip(columns, widths)))
    lines.append("")
    lines += [f"{k} {label}" + (f" [{reference_note(label, metrics)}]" if label in references else "")
              for k, (label, _) in zip(keys, columns)]
    lines.append("Ours: AUROC [95% patient-bootstrap CI]; references: published, real NIH data, split as named.")
    return "\n".join(lines)


# ------------------------------------------------------------------------- the report's plain sentences

BEATS, TRAILS, INDISTINGUISHABLE = "beats", "trails", "is indistinguishable from"


def verdict(ci) -> str | None:
    """How model a compares with model b from the 95% CI of a - b: BEATS when the whole CI is above 0,
    TRAILS when it is below 0, INDISTINGUISHABLE when it contains 0 (an end at exactly 0 included);
    None without a CI. Judged on the unrounded ends."""
    if not ci or ci[0] is None or ci[1] is None or any(math.isnan(float(v)) for v in ci):
        return None
    low, high = float(ci[0]), float(ci[1])
    return BEATS if low > 0 else TRAILS if high < 0 else INDISTINGUISHABLE


def format_signed(value, digits: int = 3) -> str:
    """A difference with its sign: "+0.029", "-0.013"; "0.000" when it rounds to zero (no "-0.000");
    "n/a" for missing."""
    if value is None or math.isnan(float(value)):
        return "n/a"
    text = f"{float(value):+.{digits}f}"
    return text[1:] if float(text) == 0 else text


def comparison_sentence(model_a: str, model_b: str, delta, ci, what: str = "mean AUROC") -> str:
    """One plain sentence for a paired comparison of a - b (`delta`, its 95% CI `ci`):
    "fusion beats small_cnn by +0.029 mean AUROC [0.007, 0.054]", "mlp trails fusion by -0.213 mean AUROC
    [-0.251, -0.176]", "mlp is indistinguishable from mlp_fu: +0.004 mean AUROC [-0.010, 0.018], the
    95% CI spans 0"; without a difference or CI: "... could not be compared ...". The number is always
    a - b, as in the paired tables."""
    word = verdict(ci)
    if delta is None or word is None:
        return f"{model_a} and {model_b} could not be compared on {what} (no paired difference with a CI)."
    amount = f"{format_signed(delta)} {what} {format_ci(ci)}"
    if word == INDISTINGUISHABLE:
        return f"{model_a} {word} {model_b}: {amount}, the 95% CI spans 0."
    return f"{model_a} {word} {model_b} by {amount}."


def model_sentence(model: str, mean, ci, *, split: str = "test", elsewhere: bool = False,
                   alone: bool = False) -> str:
    """The sentence of a model in no paired comparison: "small_cnn: mean AUROC 0.846 [0.829, 0.861] on the
    test split", saying why when it is known: `elsewhere` (evaluated on other rows, set beside) or `alone`
    (the report has no paired comparison)."""
    why = (" (evaluated on its own test rows, not paired)" if elsewhere
           else " (no paired comparison in this report)" if alone else "")
    interval = f" {format_ci(ci)}" if ci else ""
    return f"{model}: mean AUROC {format_number(mean)}{interval} on the {split} split{why}."
