"""Classification evaluation over the 14 findings: patient-level bootstrap CIs, paired model comparison,
average precision, operating thresholds chosen on validation and applied to test, subgroup AUROC.

Conventions
- `labels`, `scores`: (N, 14) arrays in FINDINGS order; labels are 0/1.
- `groups`: (N,) patient ids. Bootstrap resamples draw PATIENTS with replacement; every image of a
  drawn patient comes along (as many times as the patient was drawn). `groups=None` gives an
  image-level bootstrap (each image its own group) - only for comparison, never for reporting.
- An AUROC is undefined (None) when the evaluated rows lack positives or negatives of a class. A
  bootstrap resample where a class has one label value is skipped for that class's CI only.
- The mean AUROC (and mean AP) and its CI are always over the same classes: those defined on all the
  evaluated rows. A resample where one of them is undefined is skipped for the mean (never a mean of
  fewer classes); `mean_resamples` counts the resamples used.
- Resampled AUROCs are computed with a weighted Mann-Whitney statistic (an image drawn k times has
  weight k; ties count one half), which equals sklearn's roc_auc_score on the expanded rows.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.metrics import average_precision_score

from thorax_ray.labels import FINDINGS
from thorax_ray.metrics import mean_auroc, per_class_auroc
from thorax_ray.thresholds import check_labels_and_scores as _check
from thorax_ray.thresholds import stabilised_thresholds

MEAN_KEY = "mean"


@dataclass(frozen=True)
class BootstrapChunks:
    """How much bootstrap work is held in memory at once, in cells (resamples x patients, or x images): fewer
    cells per chunk lower the peak memory, more cut Python's per-chunk overhead.

    counts: resamples x patients per chunk of draw counts (~32 MB of float64).
    work:   resamples x images (or score groups) per call of `_weighted_average_precision` / `_weighted_aurocs`,
            which hold several float64 arrays of this size at once (tens of MB in all; with whole 4M-cell chunks
            the evaluation of the 112k-image layout peaked ~0.35 GB higher)."""

    counts: int = 4_000_000
    work: int = 500_000


CHUNKS = BootstrapChunks()


# ----------------------------------------------------------------------------------------------- input

def _groups(groups, n: int) -> tuple[np.ndarray, int]:
    """Patient index (0..P-1) of every image and the number of patients P."""
    if groups is None:
        return np.arange(n), n
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"expected ({n},) groups (patient ids), got {groups.shape}")
    _, inverse = np.unique(groups, return_inverse=True)
    inverse = inverse.reshape(-1)
    return inverse, int(inverse.max()) + 1 if n else 0


# ------------------------------------------------------------------------------------- Mann-Whitney

def auroc_mann_whitney(labels, scores, weights=None) -> float | None:
    """AUROC of one class as the (weighted) Mann-Whitney statistic: the probability that a positive
    scores above a negative, ties counting one half. `weights` (non-negative, e.g. bootstrap draw
    counts) weight every image. None when the (weighted) rows lack positives or negatives."""
    labels = np.asarray(labels).reshape(-1).astype(bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if not (len(labels) == len(scores) == len(weights)):
        raise ValueError("labels, scores and weights must have the same length")
    if len(labels) == 0:
        return None
    order = np.argsort(scores, kind="stable")
    s, y, w = scores[order], labels[order], weights[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    pos = np.add.reduceat(w * y, starts)
    neg = np.add.reduceat(w * ~y, starts)
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos <= 0 or total_neg <= 0:
        return None
    below = np.cumsum(neg) - neg
    return float(np.sum(pos * (below + 0.5 * neg)) / (total_pos * total_neg))


def _class_matrices(labels: np.ndarray, scores: np.ndarray, patient: np.ndarray, n_patients: int):
    """Per class: sparse (G, P) matrices counting positive / negative images of each patient in each
    tie group of scores (groups sorted by ascending score), or None when the class is undefined."""
    out = []
    for c in range(labels.shape[1]):
        y = labels[:, c].astype(bool)
        if y.all() or not y.any():
            out.append(None)
            continue
        order = np.argsort(scores[:, c], kind="stable")
        s = scores[order, c]
        tie = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1
        yo, po = y[order], patient[order]
        # Merge neighbouring tie groups of one kind (only positives / only negatives) into one block:
        # their order among themselves does not change the statistic. Mixed groups stay alone. This
        # shrinks the (G, b) work arrays to about twice the number of the rarer label's groups.
        n_ties = int(tie[-1]) + 1
        has_pos = np.bincount(tie, weights=yo, minlength=n_ties) > 0
        has_neg = np.bincount(tie, weights=~yo, minlength=n_ties) > 0
        kind = has_pos.astype(np.int8) + 2 * has_neg.astype(np.int8)  # 1 pos, 2 neg, 3 mixed
        starts = np.r_[True, (kind[1:] != kind[:-1]) | (kind[1:] == 3)]
        block = np.cumsum(starts) - 1
        group = block[tie]
        n_groups = int(block[-1]) + 1
        shape = (n_groups, n_patients)
        m_pos = sparse.csr_matrix((np.ones(int(yo.sum())), (group[yo], po[yo])), shape=shape)
        m_neg = sparse.csr_matrix((np.ones(int((~yo).sum())), (group[~yo], po[~yo])), shape=shape)
        out.append((m_pos, m_neg))
    return out


def _weighted_aurocs(matrices, counts: np.ndarray) -> np.ndarray:
    """(b, 14) AUROCs for b resamples given (b, P) patient draw counts; NaN where undefined."""
    b = counts.shape[0]
    out = np.full((b, len(matrices)), np.nan)
    counts_t = np.ascontiguousarray(counts.T, dtype=np.float64)  # (P, b)
    for c, pair in enumerate(matrices):
        if pair is None:
            continue
        m_pos, m_neg = pair
        pos = m_pos @ counts_t  # (G, b) positive weight per tie group
        neg = m_neg @ counts_t
        total_pos, total_neg = pos.sum(axis=0), neg.sum(axis=0)
        below = np.cumsum(neg, axis=0)
        below -= neg
        below += 0.5 * neg
        numerator = np.einsum("gb,gb->b", pos, below)
        ok = (total_pos > 0) & (total_neg > 0)
        out[ok, c] = numerator[ok] / (total_pos[ok] * total_neg[ok])
    return out


# ---------------------------------------------------------------------------------------- bootstrap

def patient_resample_counts(n_patients: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """(b, P) draw counts of every patient, chunk by chunk; the same stream for a given seed (every
    bootstrap of this package, AUROC, AP and localization, draws these resamples)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, CHUNKS.counts // max(n_patients, 1)))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        draws = rng.integers(0, n_patients, size=(b, n_patients))
        flat = (draws + n_patients * np.arange(b)[:, None]).ravel()
        yield np.bincount(flat, minlength=b * n_patients).reshape(b, n_patients)
        done += b


def bootstrap_image_weights(groups, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_boot, N) integer weights: how often each image enters each resample of the patient
    bootstrap - the exact resamples bootstrap_auroc_ci and paired_bootstrap_difference use for the
    same `groups`, `n_boot` and `seed`. Images of one patient always share a weight (whole patients).
    For inspection and tests; the bootstrap itself never materialises this (n_boot, N) array."""
    groups = np.asarray(groups)
    patient, n_patients = _groups(groups, len(groups))
    return np.concatenate([counts[:, patient] for counts in patient_resample_counts(n_patients, n_boot, seed)],
                          axis=0)


def bootstrap_aurocs(labels, scores_list, groups, n_boot: int = 1000, seed: int = 0) -> list[np.ndarray]:
    """Per model in `scores_list`, an (n_boot, 14) array of resampled AUROCs (NaN where a resample
    lacks positives or negatives of a class). All models see the same patient resamples (paired)."""
    checked = [_check(labels, s) for s in scores_list]
    labels = checked[0][0]
    patient, n_patients = _groups(groups, labels.shape[0])
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    matrices = [_class_matrices(labels, s, patient, n_patients) for _, s in checked]
    parts: list[list[np.ndarray]] = [[] for _ in checked]
    if labels.shape[0] == 0:
        return [np.full((n_boot, len(FINDINGS)), np.nan) for _ in checked]
    step = max(1, CHUNKS.work // labels.shape[0])
    for counts in patient_resample_counts(n_patients, n_boot, seed):
        for start in range(0, counts.shape[0], step):
            for k, m in enumerate(matrices):
                parts[k].append(_weighted_aurocs(m, counts[start:start + step]))
    return [np.concatenate(p, axis=0) for p in parts]


def complete_row_means(values: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Mean over `columns` of each row that has ALL of them; NaN for a row missing any (so every mean is
    over the same classes), and for every row when no column is chosen."""
    if not columns.any():
        return np.full(values.shape[0], np.nan)
    sub = values[:, columns]
    complete = ~np.isnan(sub).any(axis=1)
    return np.where(complete, np.where(np.isnan(sub), 0.0, sub).mean(axis=1), np.nan)


def mean_resamples(values: np.ndarray, columns: np.ndarray) -> dict[str, int]:
    """How many resamples a mean's CI used: {"used", "of", "classes"} (`complete_row_means`'s rule)."""
    return {"used": int(np.isfinite(complete_row_means(values, columns)).sum()), "of": int(values.shape[0]),
            "classes": int(np.asarray(columns).sum())}


def percentile_ci(values: np.ndarray, alpha: float) -> list[float] | None:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return None
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return [float(lo), float(hi)]


def bootstrap_auroc_ci(labels, scores, groups, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                       *, include_mean: bool = True) -> dict[str, list[float] | None]:
    """Percentile (1 - alpha) CI of each finding's AUROC by the patient bootstrap.

    Returns finding -> [lo, hi], or None where the AUROC on all rows is undefined (no positives or
    no negatives) or no resample has both. With `include_mean`, also "mean" -> CI of the mean AUROC over
    the findings defined on all rows, from the resamples that define every one of them.
    """
    return _auroc_ci_and_resamples(labels, scores, groups, n_boot, seed, alpha, include_mean=include_mean)[0]


def _auroc_ci_and_resamples(labels, scores, groups, n_boot: int, seed: int, alpha: float, *,
                            include_mean: bool = True) -> tuple[dict[str, list[float] | None], dict[str, int]]:
    labels_arr, scores_arr = _check(labels, scores)
    point = per_class_auroc(labels_arr, scores_arr)
    boot = bootstrap_aurocs(labels_arr, [scores_arr], groups, n_boot=n_boot, seed=seed)[0]
    defined = np.array([point[f] is not None for f in FINDINGS])
    out: dict[str, list[float] | None] = {
        f: percentile_ci(boot[:, i], alpha) if defined[i] else None for i, f in enumerate(FINDINGS)
    }
    if include_mean:
        out[MEAN_KEY] = percentile_ci(complete_row_means(boot, defined), alpha)
    return out, mean_resamples(boot, defined)


def _two_sided_p(deltas: np.ndarray) -> float:
    """Bootstrap two-sided p-value of delta = 0: twice the smaller tail, with the +1 correction."""
    n = len(deltas)
    below = (np.sum(deltas <= 0) + 1) / (n + 1)
    above = (np.sum(deltas >= 0) + 1) / (n + 1)
    return float(min(1.0, 2 * min(below, above)))


def paired_bootstrap_difference(labels, scores_a, scores_b, groups, n_boot: int = 1000, seed: int = 0,
                                alpha: float = 0.05) -> dict[str, dict | None]:
    """AUROC of model a minus model b per finding and for the mean AUROC ("mean"), on the same
    patient resamples for both models.

    Each value: {"delta": point difference on all rows, "ci": [lo, hi] percentile CI of the resampled
    differences, "p_value": two-sided bootstrap p for "no difference", "auroc_a", "auroc_b",
    "n_resamples": resamples where the class was defined}; all None where the AUROC is undefined.
    """
    labels_arr, a = _check(labels, scores_a, "scores_a")
    _, b = _check(labels_arr, scores_b, "scores_b")
    point_a, point_b = per_class_auroc(labels_arr, a), per_class_auroc(labels_arr, b)
    boot_a, boot_b = bootstrap_aurocs(labels_arr, [a, b], groups, n_boot=n_boot, seed=seed)
    defined = np.array([point_a[f] is not None for f in FINDINGS])

    def entry(delta_point, auroc_a, auroc_b, deltas):
        deltas = deltas[~np.isnan(deltas)]
        if delta_point is None or len(deltas) == 0:
            return {"delta": None, "ci": None, "p_value": None, "auroc_a": auroc_a, "auroc_b": auroc_b,
                    "n_resamples": int(len(deltas))}
        return {"delta": float(delta_point), "ci": percentile_ci(deltas, alpha), "p_value": _two_sided_p(deltas),
                "auroc_a": auroc_a, "auroc_b": auroc_b, "n_resamples": int(len(deltas))}

    out: dict[str, dict | None] = {}
    for i, f in enumerate(FINDINGS):
        delta = point_a[f] - point_b[f] if defined[i] else None
        out[f] = entry(delta, point_a[f], point_b[f], boot_a[:, i] - boot_b[:, i])
    mean_a, mean_b = mean_auroc(point_a), mean_auroc(point_b)
    delta_mean = mean_a - mean_b if mean_a is not None and mean_b is not None else None
    deltas = complete_row_means(boot_a, defined) - complete_row_means(boot_b, defined)
    out[MEAN_KEY] = entry(delta_mean, mean_a, mean_b, deltas)
    return out


# ------------------------------------------------------------------------------ precision / thresholds

def average_precision(labels, scores) -> dict[str, float | None]:
    """Average precision (area under the precision-recall curve, sklearn's step definition) per
    finding; None where the class has no positives."""
    labels_arr, scores_arr = _check(labels, scores)
    out: dict[str, float | None] = {}
    for i, f in enumerate(FINDINGS):
        y = labels_arr[:, i]
        out[f] = float(average_precision_score(y, scores_arr[:, i])) if y.sum() > 0 else None
    return out


def _weighted_average_precision(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(b,) average precision of one class for (b, N) image weights (sklearn's step definition, the same
    as `average_precision_score(y, s, sample_weight=w)`); NaN where a resample has no positive weight."""
    order = np.argsort(-s, kind="stable")
    y, s, w = y[order].astype(np.float64), s[order], weights[:, order]
    last = np.r_[s[1:] != s[:-1], True]  # the last row of each group of tied scores: one threshold each
    tp = np.cumsum(w * y, axis=1)[:, last]
    fp = np.cumsum(w * (1.0 - y), axis=1)[:, last]
    positives = tp[:, -1:]
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
    recall = np.divide(tp, positives, out=np.zeros_like(tp), where=positives > 0)
    gained = np.diff(recall, axis=1, prepend=0.0)
    return np.where(positives[:, 0] > 0, (gained * precision).sum(axis=1), np.nan)


def bootstrap_average_precision_ci(labels, scores, groups, n_boot: int = 1000, seed: int = 0,
                                   alpha: float = 0.05) -> tuple[dict[str, list[float] | None], dict[str, int]]:
    """Percentile CI of each finding's average precision (and of their mean, "mean") by the same patient
    bootstrap as the AUROC CIs; None where the class has no positives. Also returns the mean's
    `mean_resamples` counts (the mean is over the findings with positives on all rows)."""
    labels_arr, scores_arr = _check(labels, scores)
    patient, n_patients = _groups(groups, labels_arr.shape[0])
    defined = labels_arr.sum(axis=0) > 0
    parts = []
    if labels_arr.shape[0]:
        step = max(1, CHUNKS.work // labels_arr.shape[0])
        for counts in patient_resample_counts(n_patients, n_boot, seed):
            for start in range(0, counts.shape[0], step):
                weights = counts[start:start + step, patient].astype(np.float64)
                parts.append(np.stack([_weighted_average_precision(labels_arr[:, c], scores_arr[:, c], weights)
                                       if defined[c] else np.full(len(weights), np.nan)
                                       for c in range(len(FINDINGS))], axis=1))
    boot = np.concatenate(parts) if parts else np.full((n_boot, len(FINDINGS)), np.nan)
    out = {f: percentile_ci(boot[:, i], alpha) if defined[i] else None for i, f in enumerate(FINDINGS)}
    out[MEAN_KEY] = percentile_ci(complete_row_means(boot, defined), alpha)
    return out, mean_resamples(boot, defined)


def _ratio(num: int, den: int) -> float | None:
    return float(num / den) if den > 0 else None


def threshold_metrics(labels, scores, thresholds: Mapping[str, float | None]) -> dict[str, dict]:
    """Sensitivity, specificity, precision and F1 per finding at the given thresholds (positive when
    score >= threshold), with the counts. A ratio whose denominator is 0 is None; every metric is None
    for a finding whose threshold is None or missing."""
    labels_arr, scores_arr = _check(labels, scores)
    out: dict[str, dict] = {}
    for i, f in enumerate(FINDINGS):
        threshold = thresholds.get(f)
        y = labels_arr[:, i].astype(bool)
        if threshold is None or (isinstance(threshold, float) and math.isnan(threshold)):
            out[f] = {"threshold": None, "sensitivity": None, "specificity": None, "precision": None, "f1": None,
                      "tp": None, "fp": None, "tn": None, "fn": None}
            continue
        predicted = scores_arr[:, i] >= float(threshold)
        tp = int(np.sum(predicted & y))
        fp = int(np.sum(predicted & ~y))
        fn = int(np.sum(~predicted & y))
        tn = int(np.sum(~predicted & ~y))
        out[f] = {"threshold": float(threshold), "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
                  "precision": _ratio(tp, tp + fp), "f1": _ratio(2 * tp, 2 * tp + fp + fn),
                  "tp": tp, "fp": fp, "tn": tn, "fn": fn}
    return out


# ------------------------------------------------------------------------------------------ subgroups

def subgroup_auroc(labels, scores, mask_by_name: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """AUROC per finding within each subgroup (e.g. {"PA": view == "PA", "AP": view == "AP"}).

    name -> {"n": rows, "mean_auroc": ..., "auroc": {finding: float | None}, "positives": {finding: int}}.
    """
    labels_arr, scores_arr = _check(labels, scores)
    out: dict[str, dict] = {}
    for name, mask in mask_by_name.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (labels_arr.shape[0],):
            raise ValueError(f"subgroup {name!r}: mask of shape {mask.shape}, expected ({labels_arr.shape[0]},)")
        aurocs = per_class_auroc(labels_arr[mask], scores_arr[mask])
        out[str(name)] = {"n": int(mask.sum()), "mean_auroc": mean_auroc(aurocs), "auroc": aurocs,
                          "positives": {f: int(labels_arr[mask, i].sum()) for i, f in enumerate(FINDINGS)}}
    return out


# ------------------------------------------------------------------------------------------ summary

FOLLOW_UP_BUCKETS: tuple[tuple[str, int, float], ...] = (("0", 0, 0), ("1-3", 1, 3), ("4-9", 4, 9),
                                                         ("10+", 10, math.inf))
"""Follow-up # buckets (name, lowest, highest): the first film, a few, several, many earlier films."""


def follow_up_buckets(follow_up) -> dict[str, np.ndarray]:
    """Masks of the `FOLLOW_UP_BUCKETS` (and "missing") over a (N,) follow-up # array; empty ones dropped."""
    values = np.asarray(follow_up, dtype=np.float64)
    masks = {name: (values >= low) & (values <= high) for name, low, high in FOLLOW_UP_BUCKETS}
    masks["missing"] = ~np.isfinite(values)
    return {name: mask for name, mask in masks.items() if mask.any()}


def summarize_model(labels, scores, groups, *, labels_val=None, scores_val=None, view_position=None,
                    follow_up=None, rule: str = "youden", n_boot: int = 1000, seed: int = 0,
                    alpha: float = 0.05) -> dict:
    """Everything the report shows for one model on one split, in the layout report.write_report reads:
    {"n_images", "n_patients", "auroc", "mean_auroc", "auroc_ci" (with "mean"), "auroc_ci_resamples"
    (the mean's: used / of / classes), "average_precision", "average_precision_ci" (with "mean"),
    "average_precision_ci_resamples", and, given validation rows, "threshold_rule", "thresholds" (chosen on
    validation, bootstrap-stabilised where it has few positives: thresholds.stabilised_thresholds),
    "threshold_support" ({finding: {"positives", "negatives", "bootstrapped"}}: the validation rows each rests
    on) and "threshold_metrics" (on these rows); given view_position (N,), "view_position"
    (subgroup_auroc over its distinct values); given follow_up (N,), "follow_up" (subgroup_auroc over
    FOLLOW_UP_BUCKETS)}."""
    labels_arr, scores_arr = _check(labels, scores)
    aurocs = per_class_auroc(labels_arr, scores_arr)
    auroc_ci, auroc_resamples = _auroc_ci_and_resamples(labels_arr, scores_arr, groups, n_boot, seed, alpha)
    ap_ci, ap_resamples = bootstrap_average_precision_ci(labels_arr, scores_arr, groups, n_boot=n_boot, seed=seed,
                                                         alpha=alpha)
    precision = average_precision(labels_arr, scores_arr)
    out = {
        "n_images": int(labels_arr.shape[0]),
        "n_patients": int(len(np.unique(np.asarray(groups)))) if groups is not None else int(labels_arr.shape[0]),
        "auroc": aurocs,
        "mean_auroc": mean_auroc(aurocs),
        "auroc_ci": auroc_ci,
        "auroc_ci_resamples": auroc_resamples,
        "average_precision": precision,
        "mean_average_precision": mean_auroc(precision),  # the mean of the defined values, as for AUROC
        "average_precision_ci": ap_ci,
        "average_precision_ci_resamples": ap_resamples,
        "positives": {f: int(labels_arr[:, i].sum()) for i, f in enumerate(FINDINGS)},
    }
    if labels_val is not None and scores_val is not None:
        thresholds, out["threshold_support"] = stabilised_thresholds(labels_val, scores_val, rule=rule)
        out["threshold_rule"] = rule
        out["thresholds"] = thresholds
        out["threshold_metrics"] = threshold_metrics(labels_arr, scores_arr, thresholds)
    if view_position is not None:
        view = np.asarray(view_position).astype(str)
        out["view_position"] = subgroup_auroc(labels_arr, scores_arr, {v: view == v for v in sorted(set(view.tolist()))})
    if follow_up is not None:
        out["follow_up"] = subgroup_auroc(labels_arr, scores_arr, follow_up_buckets(follow_up))
    return out
