"""Classification metrics over the 14 findings. A class without both positives and negatives in the
evaluated rows has no AUROC (None / NaN), never a crash or a made-up 0.5."""
from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

from thorax_ray.labels import FINDINGS


def per_class_auroc(labels: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    """AUROC per finding (labels, scores: (N, 14)); None where the class is all-0 or all-1."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.shape != scores.shape or labels.ndim != 2 or labels.shape[1] != len(FINDINGS):
        raise ValueError(f"expected (N, {len(FINDINGS)}) labels and scores, got {labels.shape} and {scores.shape}")
    out: dict[str, float | None] = {}
    for i, finding in enumerate(FINDINGS):
        column = labels[:, i]
        out[finding] = float(roc_auc_score(column, scores[:, i])) if 0 < column.sum() < len(column) else None
    return out


def mean_auroc(aurocs: dict[str, float | None]) -> float | None:
    """Mean over the findings that have an AUROC; None if none has."""
    values = [v for v in aurocs.values() if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else None


BCE_CLIP = 1e-7  # probabilities are clipped to [BCE_CLIP, 1 - BCE_CLIP] (float32 sigmoid saturates near |logit| 17)


def mean_binary_cross_entropy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The unweighted binary cross-entropy averaged over every (row, finding) pair: CheXNet's loss over the 14
    findings, -mean(y log p + (1 - y) log(1 - p)), computed in float64 from the probabilities (clipped)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), BCE_CLIP, 1.0 - BCE_CLIP)
    if y.shape != p.shape or y.size == 0:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} must have one equal, non-empty shape")
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))
