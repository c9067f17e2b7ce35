"""Classification evaluation over the 14 findings: patient-level bootstrap CIs, paired model comparison,
average precision, operating thresholds chosen on validation and applied to test, subgroup AUROC.

Conventions
- `labels`, `scores`: (N, 14) arrays in FINDINGS order; labels are 0/1.
- `groups`: (N,) patient ids. Bootstrap resamples draw PATIENTS with replacement; every image of a
  drawn patient comes along (as many times as the patient was drawn). `groups=None` gives an
  image-level bootstrap (each image its own group) - only for comparison, never for reporting.
- An AUROC is undefined (None) when the evaluated rows lack positives or negatives of a class. A
  bootstrap resample where a class has one label value is skipped for that class only.
- Resampled AUROCs are computed with a weighted Mann-Whitney statistic (an image drawn k times has
  weight k; ties count one half), which equals sklearn's roc_auc_score on the expanded rows.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np
from scipy import sparse
from sklearn.metrics import average_precision_score

from thorax_ray.labels import FINDINGS
from thorax_ray.metrics import mean_auroc, per_class_auroc
from thorax_ray.thresholds import (THRESHOLD_RULES, THRESHOLDS_KIND, choose_thresholds,  # noqa: F401 (re-exported)
                                   thresholds_document, thresholds_from_document)
from thorax_ray.thresholds import check_labels_and_scores as _check

MEAN_KEY = "mean"
_CHUNK_CELLS = 4_000_000  # resamples x patients per chunk of bootstrap counts (~32 MB of float64)


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

def _count_chunks(n_patients: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """(b, P) draw counts of every patient, chunk by chunk; the same stream for a given seed."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _CHUNK_CELLS // max(n_patients, 1)))
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
    return np.concatenate([counts[:, patient] for counts in _count_chunks(n_patients, n_boot, seed)], axis=0)


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
    for counts in _count_chunks(n_patients, n_boot, seed):
        for k, m in enumerate(matrices):
            parts[k].append(_weighted_aurocs(m, counts))
    return [np.concatenate(p, axis=0) for p in parts]


def _row_means(values: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Mean over `columns` of each row ignoring NaN; NaN for a row without any value (no warnings)."""
    if not columns.any():
        return np.full(values.shape[0], np.nan)
    sub = values[:, columns]
    present = ~np.isnan(sub)
    n = present.sum(axis=1)
    total = np.where(present, sub, 0.0).sum(axis=1)
    return np.divide(total, n, out=np.full(len(n), np.nan), where=n > 0)


def _percentile_ci(values: np.ndarray, alpha: float) -> list[float] | None:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return None
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return [float(lo), float(hi)]


def bootstrap_auroc_ci(labels, scores, groups, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                       *, include_mean: bool = True) -> dict[str, list[float] | None]:
    """Percentile (1 - alpha) CI of each finding's AUROC by the patient bootstrap.

    Returns finding -> [lo, hi], or None where the AUROC on all rows is undefined (no positives or
    no negatives) or no resample has both. With `include_mean`, also "mean" -> CI of the mean AUROC
    (per resample, the mean over the findings defined on all rows that the resample defines too).
    """
    labels_arr, scores_arr = _check(labels, scores)
    point = per_class_auroc(labels_arr, scores_arr)
    boot = bootstrap_aurocs(labels_arr, [scores_arr], groups, n_boot=n_boot, seed=seed)[0]
    defined = np.array([point[f] is not None for f in FINDINGS])
    out: dict[str, list[float] | None] = {
        f: _percentile_ci(boot[:, i], alpha) if defined[i] else None for i, f in enumerate(FINDINGS)
    }
    if include_mean:
        out[MEAN_KEY] = _percentile_ci(_row_means(boot, defined), alpha)
    return out


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
        return {"delta": float(delta_point), "ci": _percentile_ci(deltas, alpha), "p_value": _two_sided_p(deltas),
                "auroc_a": auroc_a, "auroc_b": auroc_b, "n_resamples": int(len(deltas))}

    out: dict[str, dict | None] = {}
    for i, f in enumerate(FINDINGS):
        delta = point_a[f] - point_b[f] if defined[i] else None
        out[f] = entry(delta, point_a[f], point_b[f], boot_a[:, i] - boot_b[:, i])
    mean_a, mean_b = mean_auroc(point_a), mean_auroc(point_b)
    delta_mean = mean_a - mean_b if mean_a is not None and mean_b is not None else None
    out[MEAN_KEY] = entry(delta_mean, mean_a, mean_b, _row_means(boot_a, defined) - _row_means(boot_b, defined))
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

def summarize_model(labels, scores, groups, *, labels_val=None, scores_val=None, view_position=None,
                    rule: str = "youden", n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Everything the report shows for one model on one split, in the layout report.write_report reads:
    {"n_images", "n_patients", "auroc", "mean_auroc", "auroc_ci" (with "mean"), "average_precision",
    and, given validation rows, "threshold_rule", "thresholds" (chosen on validation) and
    "threshold_metrics" (on these rows); given view_position (N,), "view_position" (subgroup_auroc
    over its distinct values)}."""
    labels_arr, scores_arr = _check(labels, scores)
    aurocs = per_class_auroc(labels_arr, scores_arr)
    out = {
        "n_images": int(labels_arr.shape[0]),
        "n_patients": int(len(np.unique(np.asarray(groups)))) if groups is not None else int(labels_arr.shape[0]),
        "auroc": aurocs,
        "mean_auroc": mean_auroc(aurocs),
        "auroc_ci": bootstrap_auroc_ci(labels_arr, scores_arr, groups, n_boot=n_boot, seed=seed, alpha=alpha),
        "average_precision": average_precision(labels_arr, scores_arr),
        "positives": {f: int(labels_arr[:, i].sum()) for i, f in enumerate(FINDINGS)},
    }
    if labels_val is not None and scores_val is not None:
        thresholds = choose_thresholds(labels_val, scores_val, rule=rule)
        out["threshold_rule"] = rule
        out["thresholds"] = thresholds
        out["threshold_metrics"] = threshold_metrics(labels_arr, scores_arr, thresholds)
    if view_position is not None:
        view = np.asarray(view_position).astype(str)
        out["view_position"] = subgroup_auroc(labels_arr, scores_arr, {v: view == v for v in sorted(set(view.tolist()))})
    return out
