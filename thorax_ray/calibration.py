"""Calibrated probabilities per finding, fitted on validation predictions, and their calibration error.

Stage-neutral, beside thorax_ray/thresholds.py: training fits a calibration on the validation split at every
epoch (`fit_calibration`; the dict travels in the checkpoint as `CheckpointPayload.calibration`), scoring
applies it (`apply_calibration`: a calibrated column beside each raw probability column), evaluation reports
the expected calibration error (`expected_calibration_error`) and reliability diagrams (`reliability_curve`)
before and after.

Method. Platt scaling per finding (Platt 1999): calibrated = sigmoid(a * z + b), z = logit(p) of the raw
probability p clipped to [EPS, 1 - EPS], in float64; a and b minimise the negative log-likelihood of the
validation labels (Newton's method with step halving), with Platt's targets (N+ + 1) / (N+ + 2) for the
positives and 1 / (N- + 2) for the negatives, so that a finding with few positives (or validation scores
that separate it perfectly) gets a finite map, not one that says 0 or 1. Temperature scaling (Guo et al.
2017: calibrated = sigmoid(z / T), the same fit with b = 0 and a = 1 / T) is available as
method="temperature". Platt is the default because a loss that re-weights a finding's classes
(class_balanced_bce, focal) shifts all its logits by about log(pos_weight), an offset no temperature removes.
Both maps increase strictly (a > 0; Platt's a is fitted under a >= MIN_SLOPE, so a finding that the validation
scores rank at or below chance gets a nearly flat map at about its validation prevalence), so each finding's
ranking (AUROC, AP) is unchanged and an operating threshold t on the raw probability is the threshold apply(t)
on the calibrated one.

A finding whose validation rows have no positives or no negatives, or whose scores are all equal, keeps the
identity (a = 1, b = 0: the raw probability), recorded with the reason; so does a temperature fit without a
positive 1/T.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from thorax_ray.labels import FINDINGS
from thorax_ray.thresholds import check_labels_and_scores

CALIBRATION_KIND = "thorax_ray.calibration"
CALIBRATION_VERSION = 1
CALIBRATION_METHODS = ("platt", "temperature")
DEFAULT_METHOD = "platt"
ECE_BINS = 15
EPS = 1e-12  # probabilities are clipped to [EPS, 1 - EPS] before the logit (float64)
_NEWTON_STEPS = 100
MIN_SLOPE = 0.01  # Platt's a is fitted under a >= MIN_SLOPE: the map increases strictly


# ----- the map -------------------------------------------------------------------------------------------


def logits_of(probabilities) -> np.ndarray:
    """logit(p) in float64, p clipped to [EPS, 1 - EPS]."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _mean_nll(s: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean(targets * np.logaddexp(0.0, -s) + (1 - targets) * np.logaddexp(0.0, s)))


def _newton(x: np.ndarray, offset: np.ndarray, targets: np.ndarray, start: list[float]) -> np.ndarray:
    """w minimising the mean NLL of sigmoid(x @ w + offset) against `targets` (convex), from `start`; every
    step is halved until the NLL does not grow."""
    w = np.array(start, dtype=np.float64)
    current = _mean_nll(x @ w + offset, targets)
    for _ in range(_NEWTON_STEPS):
        p = _sigmoid(x @ w + offset)
        gradient = x.T @ (p - targets) / len(x)
        hessian = (x * (p * (1 - p))[:, None]).T @ x / len(x) + 1e-12 * np.eye(x.shape[1])
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-8 and _mean_nll(x @ (w - scale * step) + offset, targets) > current:
            scale /= 2
        w = w - scale * step
        current = _mean_nll(x @ w + offset, targets)
        if np.abs(scale * step).max() < 1e-10:
            break
    return w


def _fit_map(z: np.ndarray, targets: np.ndarray, method: str) -> tuple[float, float, str | None]:
    """(a, b, why the identity) of one finding. Platt: the NLL's minimum over a >= MIN_SLOPE (convex, so when
    the free minimum has a smaller slope the constrained one has a = MIN_SLOPE and b refitted: about the
    validation prevalence for every image, ranking kept). Temperature: a = 1 / T; no positive minimum keeps
    the identity."""
    ones, zero = np.ones((len(z), 1)), np.zeros(len(z))
    if method == "temperature":
        a = float(_newton(z[:, None], zero, targets, [1.0])[0])
        return (a, 0.0, None) if np.isfinite(a) and a > 0 else (1.0, 0.0, f"fitted 1/T = {a:.3g} not positive")
    a, b = (float(v) for v in _newton(np.column_stack([z, ones]), zero, targets, [1.0, 0.0]))
    if a < MIN_SLOPE:
        a, b = MIN_SLOPE, float(_newton(ones, MIN_SLOPE * z, targets, [0.0])[0])
    return (a, b, None) if np.isfinite(a) and np.isfinite(b) else (1.0, 0.0, "the fit did not converge")


def _fit_one(y: np.ndarray, p: np.ndarray, method: str, bins: int) -> dict:
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    z = logits_of(p)
    reason = ("no positives in the fitting rows" if n_pos == 0 else "no negatives in the fitting rows" if n_neg == 0
              else "every score equal" if np.ptp(z) == 0 else None)
    a, b = 1.0, 0.0
    if reason is None:
        targets = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        a, b, reason = _fit_map(z, targets, method)
    entry = {"a": a, "b": b, "fitted": reason is None, "reason": reason, "n_positives": n_pos, "n_negatives": n_neg,
             "ece_before": None, "ece_after": None}
    if method == "temperature":
        entry["temperature"] = 1 / a
    if len(y):
        calibrated = p if reason else _sigmoid(a * z + b)
        entry.update(ece_before=expected_calibration_error(y, p, bins),
                     ece_after=expected_calibration_error(y, calibrated, bins))
    return entry


def fit_calibration(labels, probabilities, *, method: str = DEFAULT_METHOD, bins: int = ECE_BINS) -> dict:
    """The calibration of each finding, fitted on VALIDATION labels and raw probabilities, both (N, 14) in
    FINDINGS order. A plain, JSON-able dict (stored in the checkpoint as it is):

        {"kind": "thorax_ray.calibration", "version": 1, "method": "platt" | "temperature",
         "fitted_on": "validation", "n_images": N, "bins": 15, "eps": EPS, "formula": str,
         "label_order": [...FINDINGS],
         "findings": {finding: {"a", "b", "fitted": bool, "reason": str | None, "n_positives", "n_negatives",
                                "ece_before", "ece_after" (on the fitting rows; None without rows),
                                "temperature" (method "temperature" only)}}}"""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; known: {', '.join(CALIBRATION_METHODS)}")
    labels_arr, probs = check_labels_and_scores(labels, probabilities, "probabilities")
    if probs.size and (probs.min() < 0 or probs.max() > 1):
        raise ValueError("probabilities must lie in [0, 1]")
    findings = {f: _fit_one(labels_arr[:, i].astype(np.float64), probs[:, i], method, bins)
                for i, f in enumerate(FINDINGS)}
    return {"kind": CALIBRATION_KIND, "version": CALIBRATION_VERSION, "method": method, "fitted_on": "validation",
            "n_images": int(labels_arr.shape[0]), "bins": int(bins), "eps": EPS,
            "formula": "calibrated = sigmoid(a * logit(clip(p, eps, 1 - eps)) + b), float64, per finding",
            "label_order": list(FINDINGS), "findings": findings}


def _parameters(calibration: Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, fitted) per finding, after checking the dict's kind, method and label order."""
    if calibration.get("kind") != CALIBRATION_KIND:
        raise ValueError(f"not a calibration (kind {calibration.get('kind')!r}, expected {CALIBRATION_KIND!r})")
    if calibration.get("method") not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {calibration.get('method')!r}; "
                         f"known: {', '.join(CALIBRATION_METHODS)}")
    if list(calibration.get("label_order", [])) != list(FINDINGS):
        raise ValueError("calibration has a different label order than thorax_ray.labels.FINDINGS")
    entries = [calibration["findings"][f] for f in FINDINGS]
    return (np.array([float(e["a"]) for e in entries]), np.array([float(e["b"]) for e in entries]),
            np.array([bool(e["fitted"]) for e in entries]))


def apply_calibration(calibration: Mapping | None, probabilities) -> np.ndarray:
    """Calibrated probabilities (N, 14) float64 from raw ones (N, 14), FINDINGS order. `calibration` None
    (a checkpoint written without one) or a finding kept at the identity: the raw probability, as it is."""
    raw = np.asarray(probabilities, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] != len(FINDINGS):
        raise ValueError(f"expected (N, {len(FINDINGS)}) probabilities, got {raw.shape}")
    if calibration is None:
        return raw.copy()
    a, b, fitted = _parameters(calibration)
    return np.where(fitted, _sigmoid(a * logits_of(raw) + b), raw)


def calibrated_thresholds(calibration: Mapping | None,
                          thresholds: Mapping[str, float | None]) -> dict[str, float | None]:
    """Operating thresholds on the raw probabilities mapped to the calibrated scale (the map increases, so
    raw >= t exactly when calibrated >= apply(t), up to float rounding); None stays None."""
    values = np.array([[0.5 if thresholds.get(f) is None else float(thresholds[f]) for f in FINDINGS]])
    mapped = apply_calibration(calibration, values)[0]
    return {f: None if thresholds.get(f) is None else float(v) for f, v in zip(FINDINGS, mapped)}


def describe_calibration(calibration: Mapping | None) -> dict:
    """What a scoring run says about its calibrated columns (score metadata and commit record)."""
    if calibration is None:
        return {"applied": False, "reason": "the checkpoint has no calibration (written before it existed): "
                                            "the calibrated columns repeat the raw probabilities"}
    _parameters(calibration)  # checks it
    findings = calibration["findings"]
    return {"applied": True, "method": calibration["method"], "fitted_on": calibration.get("fitted_on"),
            "n_images": calibration.get("n_images"), "formula": calibration.get("formula"),
            "identity": sorted(f for f in FINDINGS if not findings[f]["fitted"]),
            "parameters": {f: {k: findings[f].get(k) for k in ("a", "b", "n_positives", "n_negatives")}
                           for f in FINDINGS}}


# ----- calibration error -----------------------------------------------------------------------------------


def _bins(probabilities: np.ndarray, bins: int) -> np.ndarray:
    """Bin index of each probability: equal-width bins (k/M, (k+1)/M], the first one [0, 1/M]."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.digitize(probabilities, edges[1:-1], right=True), 0, bins - 1)


def _check_1d(labels, probabilities) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in length: {y.shape} and {p.shape}")
    return y, p


def expected_calibration_error(labels, probabilities, bins: int = ECE_BINS) -> float | None:
    """ECE of one finding (Naeini et al. 2015; Guo et al. 2017, eq. 3): the rows fall into `bins` equal-width
    bins of the predicted probability ((k/M, (k+1)/M], the first [0, 1/M]); ECE = sum over the bins of
    |B_k| / n * |accuracy(B_k) - confidence(B_k)|. In this binary per-finding case confidence(B_k) is the mean
    predicted probability of the POSITIVE class in the bin and accuracy(B_k) the fraction of positives in it
    (not the top-label form of the multi-class paper). 1-D labels (0/1) and probabilities; None without rows."""
    y, p = _check_1d(labels, probabilities)
    if not len(y):
        return None
    index = _bins(p, bins)
    count = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, weights=y, minlength=bins) - np.bincount(index, weights=p, minlength=bins))
    return float(gap.sum() / count.sum())  # sum_k |B_k|/n * |mean y - mean p| = sum_k |sum y - sum p| / n


def ece_per_finding(labels, probabilities, bins: int = ECE_BINS) -> dict[str, float | None]:
    """`expected_calibration_error` of each finding of (N, 14) labels and probabilities."""
    labels_arr, probs = check_labels_and_scores(labels, probabilities, "probabilities")
    return {f: expected_calibration_error(labels_arr[:, i], probs[:, i], bins) for i, f in enumerate(FINDINGS)}


def reliability_curve(labels, probabilities, bins: int = ECE_BINS) -> dict[str, list]:
    """The reliability diagram of one finding: for each non-empty bin of `expected_calibration_error`'s bins,
    its edges, mean predicted probability ("confidence"), fraction of positives ("accuracy") and row count."""
    y, p = _check_1d(labels, probabilities)
    index = _bins(p, bins)
    count = np.bincount(index, minlength=bins)
    kept = count > 0
    edges = np.linspace(0.0, 1.0, bins + 1)
    confidence = np.bincount(index, weights=p, minlength=bins)[kept] / count[kept]
    accuracy = np.bincount(index, weights=y, minlength=bins)[kept] / count[kept]
    return {"lower": edges[:-1][kept].tolist(), "upper": edges[1:][kept].tolist(),
            "confidence": confidence.tolist(), "accuracy": accuracy.tolist(), "count": count[kept].tolist()}
