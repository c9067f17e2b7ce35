"""The validation reference a training checkpoint carries (`CheckpointPayload.validation_reference`), computed
by rank 0 at every epoch from that epoch's validation predictions and penultimate features, beside the
operating points and the calibration: what scoring compares each batch with (thorax_ray.monitoring.run).

Stored form (tensors and plain numbers only, so `torch.load(weights_only=True)` reads it):

    {"format": 1, "chosen_on": "validation", "rows": N, "findings": [14 names],
     "probabilities": {"edges": [[cut points] per finding],      # the validation deciles (distinct values)
                       "counts": [[validation rows per bin] per finding],
                       "quantiles": tensor (14, 1001) float64,  # quantile function at levels 0, 0.001, ..., 1
                       "means": [14 floats]},
     "features": FeatureModel.to_dict() (thorax_ray.monitoring.ood) or None (no features captured)}

A checkpoint without it (written before it, or with fewer than MIN_ROWS validation rows) has None, and
scoring says that drift monitoring is unavailable.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from thorax_ray.labels import FINDINGS
from thorax_ray.monitoring.drift import bin_counts
from thorax_ray.monitoring.ood import FeatureModel, fit_feature_model

REFERENCE_FORMAT = 1
MIN_ROWS = 20
DECILES = np.linspace(0.1, 0.9, 9)
QUANTILE_LEVELS = 1001


@dataclass(frozen=True)
class FindingReference:
    """One finding's validation distribution: PSI bins and counts, the quantile function, the mean."""

    edges: np.ndarray
    counts: np.ndarray
    quantiles: np.ndarray
    mean: float
    rows: int


@dataclass(frozen=True)
class ValidationReference:
    rows: int
    findings: dict[str, FindingReference]
    features: FeatureModel | None

    @classmethod
    def from_dict(cls, stored: dict | None) -> "ValidationReference | None":
        """The reference of a checkpoint's stored form (None stays None)."""
        if not stored:
            return None
        if stored.get("format") != REFERENCE_FORMAT or list(stored.get("findings", [])) != list(FINDINGS):
            raise ValueError(f"validation reference of format {stored.get('format')} for findings "
                             f"{stored.get('findings')}; expected format {REFERENCE_FORMAT} for {list(FINDINGS)}")
        rows = int(stored["rows"])
        probabilities = stored["probabilities"]
        quantiles = np.asarray(probabilities["quantiles"], dtype=np.float64)
        findings = {name: FindingReference(edges=np.asarray(probabilities["edges"][i], dtype=np.float64),
                                           counts=np.asarray(probabilities["counts"][i], dtype=np.int64),
                                           quantiles=quantiles[i], mean=float(probabilities["means"][i]), rows=rows)
                    for i, name in enumerate(FINDINGS)}
        features = stored.get("features")
        return cls(rows=rows, findings=findings, features=FeatureModel.from_dict(features) if features else None)


def validation_reference(probabilities: np.ndarray, features: np.ndarray | None = None) -> dict | None:
    """The stored form (module docstring) from validation `probabilities` (N, 14) and penultimate `features`
    (N, D) of the same rows in the same order (None: no feature model); None with fewer than MIN_ROWS rows."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(FINDINGS):
        raise ValueError(f"expected (N, {len(FINDINGS)}) validation probabilities, got {probabilities.shape}")
    if len(probabilities) < MIN_ROWS:
        return None
    if features is not None and len(features) != len(probabilities):
        raise ValueError(f"{len(features)} feature rows for {len(probabilities)} validation rows")
    edges = [np.unique(np.quantile(column, DECILES)) for column in probabilities.T]
    feature_model = fit_feature_model(features) if features is not None else None
    return {
        "format": REFERENCE_FORMAT, "chosen_on": "validation", "rows": int(len(probabilities)),
        "findings": list(FINDINGS),
        "probabilities": {
            "edges": [[float(e) for e in cut] for cut in edges],
            "counts": [[int(c) for c in bin_counts(column, cut)] for column, cut in zip(probabilities.T, edges)],
            "quantiles": torch.from_numpy(np.quantile(probabilities, np.linspace(0, 1, QUANTILE_LEVELS), axis=0).T.copy()),
            "means": [float(m) for m in probabilities.mean(axis=0)],
        },
        "features": feature_model.to_dict() if feature_model is not None else None,
    }


def feature_model_of(stored: dict | None) -> FeatureModel | None:
    """The out-of-distribution model of a checkpoint's stored reference; None when it has none or it cannot be
    read (the run's monitoring record then says why, thorax_ray.monitoring.run.parse_reference)."""
    try:
        reference = ValidationReference.from_dict(stored)
    except (ValueError, KeyError, TypeError):
        return None
    return None if reference is None else reference.features
