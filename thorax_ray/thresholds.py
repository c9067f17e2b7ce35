"""Operating thresholds per finding, chosen on validation predictions, and their versioned document.

Stage-neutral: training calls `operating_points` at every epoch (the thresholds travel in the checkpoint and
metrics.json), scoring gates boxes and overlays with them, evaluation chooses and reports its own with the
same rules (`stabilised_thresholds`) and keeps them as versioned files (`write_thresholds`).

A finding with few validation positives (fewer than `MIN_POSITIVES` = 30) gets a bootstrap-stabilised
threshold (`stabilised_thresholds`): the median of the rule's thresholds over `BOOTSTRAP_RESAMPLES` stratified
resamples of the validation rows (positives and negatives each resampled with replacement, so every resample
has the same counts; a fixed seed per finding, so the result is reproducible). With a handful of positives one
of them moving decides the plain rule's threshold; the median over resamples does not hinge on one image.
Thresholds stay on the RAW probabilities (thorax_ray.calibration maps them to the calibrated scale).
"""
from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Mapping

import numpy as np

from thorax_ray import storage
from thorax_ray.labels import FINDING_COLUMNS, FINDINGS

THRESHOLD_RULES = ("youden", "f1")
THRESHOLDS_KIND = "thorax_ray.thresholds"
OPERATING_POINT_RULE = "youden"  # the rule training uses for the checkpoint's operating points
MIN_POSITIVES = 30  # fewer validation positives than this: the threshold is bootstrap-stabilised
BOOTSTRAP_RESAMPLES = 201  # odd: the median is one resample's threshold
BOOTSTRAP_SEED = 0
STABILISATION = ("median of the rule's thresholds over stratified bootstrap resamples of the validation rows "
                 "(positives and negatives resampled separately, with replacement)")


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


def _bootstrapped(y: np.ndarray, s: np.ndarray, rule: str, n_boot: int, seed: int, index: int) -> float | None:
    """Median of the rule's thresholds over `n_boot` stratified resamples (seeded by (seed, finding index))."""
    rng = np.random.default_rng([seed, index])
    positives, negatives = s[y == 1], s[y == 0]
    labels = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    chosen = []
    for _ in range(n_boot):
        resample = np.r_[rng.choice(positives, len(positives)), rng.choice(negatives, len(negatives))]
        threshold = _choose_one(labels, resample, rule)
        if threshold is not None:
            chosen.append(threshold)
    return float(np.median(chosen)) if chosen else None


def stabilised_thresholds(labels_val, scores_val, rule: str = "youden", *, min_positives: int = MIN_POSITIVES,
                          n_boot: int = BOOTSTRAP_RESAMPLES,
                          seed: int = BOOTSTRAP_SEED) -> tuple[dict[str, float | None], dict[str, dict]]:
    """`choose_thresholds`, except that a finding with 0 < positives < `min_positives` in the validation rows
    gets the bootstrap-stabilised threshold (module docstring). Returns (thresholds, support): support per
    finding {"positives", "negatives", "bootstrapped": bool}, what the threshold rests on."""
    thresholds = choose_thresholds(labels_val, scores_val, rule=rule)
    labels_arr, scores_arr = check_labels_and_scores(labels_val, scores_val)
    support = {}
    for i, f in enumerate(FINDINGS):
        y = labels_arr[:, i].astype(np.float64)
        positives = int(y.sum())
        bootstrapped = thresholds[f] is not None and positives < min_positives and n_boot > 0
        if bootstrapped:
            thresholds[f] = _bootstrapped(y, scores_arr[:, i], rule, n_boot, seed, i)
        support[f] = {"positives": positives, "negatives": len(y) - positives, "bootstrapped": bootstrapped}
    return thresholds, support


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


THRESHOLD_KEYS = ("model", "split_hash", "rule", "thresholds")  # what makes two threshold files the same


def write_thresholds(folder: str, model: str, thresholds: dict, *, split_hash: str, rule: str,
                     endpoint_url: str | None = None) -> str:
    """`folder/<model>.v<N>.json` (local or s3://): a new version N when the thresholds (or their rule or
    split) differ from the newest existing version, which is otherwise kept as it is. Returns its path."""
    versions = []
    for name in storage.list_names(folder, endpoint_url=endpoint_url):
        match = re.fullmatch(re.escape(model) + r"\.v(\d+)\.json", name)
        if match:
            versions.append(int(match.group(1)))
    newest = max(versions, default=0)
    document = thresholds_document(thresholds, model=model, split_hash=split_hash, rule=rule, version=newest + 1)
    if newest:
        path = storage.join(folder, f"{model}.v{newest}.json")
        previous = storage.read_json(path, endpoint_url=endpoint_url)
        if all(previous.get(k) == document.get(k) for k in THRESHOLD_KEYS):
            return path
    path = storage.join(folder, f"{model}.v{newest + 1}.json")
    storage.write_json(path, document, endpoint_url=endpoint_url)
    return path


def thresholds_from_document(document: Mapping) -> dict[str, float | None]:
    """Reads back thresholds_document's content, checking its kind and label order."""
    if document.get("kind") != THRESHOLDS_KIND:
        raise ValueError(f"not a thresholds document (kind {document.get('kind')!r}, expected {THRESHOLDS_KIND!r})")
    if list(document.get("label_order", [])) != list(FINDINGS):
        raise ValueError("thresholds document has a different label order than thorax_ray.labels.FINDINGS")
    return {f: (None if document["thresholds"].get(f) is None else float(document["thresholds"][f])) for f in FINDINGS}


def operating_points(labels_val, probabilities_val, rule: str = OPERATING_POINT_RULE, *,
                     min_positives: int = MIN_POSITIVES, n_boot: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> dict:
    """The checkpoint's operating points: {"rule", "chosen_on": "validation", "n_images", "decision",
    "thresholds": {finding: float | None}, "support": {finding: {"positives", "negatives", "bootstrapped"}},
    "stabilisation": {"min_positives", "resamples", "seed", "statistic"}} from validation labels and raw
    probabilities (N, 14), thresholds as `stabilised_thresholds` gives them; a finding whose validation rows
    lack positives or negatives has None."""
    thresholds, support = stabilised_thresholds(labels_val, probabilities_val, rule, min_positives=min_positives,
                                                n_boot=n_boot, seed=seed)
    return {"rule": rule, "chosen_on": "validation", "n_images": int(np.asarray(labels_val).shape[0]),
            "decision": "positive when probability >= threshold", "thresholds": thresholds, "support": support,
            "stabilisation": {"min_positives": int(min_positives), "resamples": int(n_boot), "seed": int(seed),
                              "statistic": STABILISATION}}
