"""Operating thresholds per finding, chosen on validation predictions, and their versioned document.

Stage-neutral: training calls `operating_points` at every epoch (the thresholds travel in the checkpoint and
metrics.json), scoring gates boxes and overlays with them, evaluation chooses and reports its own with the
same `choose_thresholds`.
"""
from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping

import numpy as np

from thorax_ray.labels import FINDING_COLUMNS, FINDINGS

THRESHOLD_RULES = ("youden", "f1")
THRESHOLDS_KIND = "thorax_ray.thresholds"
OPERATING_POINT_RULE = "youden"  # the rule training uses for the checkpoint's operating points


def check_labels_and_scores(labels, scores, name: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    """(labels as int8, scores as float64) after checking: (N, 14), labels 0/1, scores finite."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 2 or labels.shape[1] != len(FINDINGS) or labels.shape != scores.shape:
        raise ValueError(f"expected (N, {len(FINDINGS)}) labels and {name}, got {labels.shape} and {scores.shape}")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return labels.astype(np.int8), scores


def _choose_one(y: np.ndarray, s: np.ndarray, rule: str) -> float | None:
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    distinct = np.unique(s)  # ascending
    # Candidate k predicts positive for scores >= distinct[k]; the threshold is the midpoint between
    # distinct[k-1] and distinct[k] (distinct[0] itself for k = 0), so it lies between the classes.
    mids = distinct[:-1] + (distinct[1:] - distinct[:-1]) / 2
    mids = np.where(mids > distinct[:-1], mids, distinct[1:])
    candidates = np.r_[distinct[0], mids]
    # Positives / negatives with score >= distinct[k]: suffix sums over the sorted distinct values.
    index = np.searchsorted(distinct, s)
    pos_at = np.bincount(index, weights=y, minlength=len(distinct))
    neg_at = np.bincount(index, weights=1 - y, minlength=len(distinct))
    tp = np.cumsum(pos_at[::-1])[::-1]
    fp = np.cumsum(neg_at[::-1])[::-1]
    if rule == "youden":
        objective = tp / n_pos - fp / n_neg
    elif rule == "f1":
        objective = 2 * tp / (2 * tp + fp + (n_pos - tp))
    else:
        raise ValueError(f"unknown threshold rule {rule!r}; known: {', '.join(THRESHOLD_RULES)}")
    return float(candidates[int(np.argmax(objective))])


def choose_thresholds(labels_val, scores_val, rule: str = "youden") -> dict[str, float | None]:
    """Operating threshold per finding, chosen on the VALIDATION split: "youden" maximises
    sensitivity + specificity - 1, "f1" maximises F1. A row is predicted positive when
    score >= threshold; the threshold lies midway between two neighbouring distinct scores. None
    where the validation rows lack positives or negatives of the class (no made-up default)."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; known: {', '.join(THRESHOLD_RULES)}")
    labels_arr, scores_arr = check_labels_and_scores(labels_val, scores_val)
    return {f: _choose_one(labels_arr[:, i].astype(np.float64), scores_arr[:, i], rule) for i, f in enumerate(FINDINGS)}


def thresholds_document(thresholds: Mapping[str, float | None], *, model: str, split_hash: str, rule: str,
                        version: int = 1, chosen_on: str = "validation",
                        created: str | None = None) -> dict:
    """Content of the separate, versioned thresholds file (write it with json.dump)."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; known: {', '.join(THRESHOLD_RULES)}")
    unknown = set(thresholds) - set(FINDINGS)
    if unknown:
        raise ValueError(f"thresholds for unknown findings {sorted(unknown)}; known: {', '.join(FINDINGS)}")
    values = {}
    for f in FINDINGS:
        v = thresholds.get(f)
        values[f] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
    return {
        "kind": THRESHOLDS_KIND,
        "version": int(version),
        "created": created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": str(model),
        "split_hash": str(split_hash),
        "rule": rule,
        "chosen_on": chosen_on,
        "decision": "positive when probability >= threshold",
        "label_order": list(FINDINGS),
        "columns": list(FINDING_COLUMNS),
        "thresholds": values,
    }


def thresholds_from_document(document: Mapping) -> dict[str, float | None]:
    """Reads back thresholds_document's content, checking its kind and label order."""
    if document.get("kind") != THRESHOLDS_KIND:
        raise ValueError(f"not a thresholds document (kind {document.get('kind')!r}, expected {THRESHOLDS_KIND!r})")
    if list(document.get("label_order", [])) != list(FINDINGS):
        raise ValueError("thresholds document has a different label order than thorax_ray.labels.FINDINGS")
    return {f: (None if document["thresholds"].get(f) is None else float(document["thresholds"][f])) for f in FINDINGS}


def operating_points(labels_val, probabilities_val, rule: str = OPERATING_POINT_RULE) -> dict:
    """The checkpoint's operating points: {"rule", "chosen_on": "validation", "n_images", "decision",
    "thresholds": {finding: float | None}} from validation labels and probabilities (N, 14); a finding
    whose validation rows lack positives or negatives has None."""
    thresholds = choose_thresholds(labels_val, probabilities_val, rule=rule)
    return {"rule": rule, "chosen_on": "validation", "n_images": int(np.asarray(labels_val).shape[0]),
            "decision": "positive when probability >= threshold", "thresholds": thresholds}
