"""The per-image out-of-distribution score: the Mahalanobis distance of an image's penultimate features
(thorax_ray.monitoring.features) from the validation features, with a Ledoit-Wolf shrunk covariance (a
well-conditioned precision matrix even when the feature dimension approaches the number of validation rows).

The threshold is chosen on validation without reusing the rows a covariance was fitted on: the validation
rows are split into two folds (even and odd positions), each fold's distances are measured under the model
fitted on the other fold, and the threshold is the `OOD_QUANTILE` (99th) percentile of those out-of-fold
distances. So about 1% of images drawn like the validation images are flagged (`OOD_EXPECTED_SHARE`). The
stored mean and precision are then fitted on every validation row.

A run raises the out-of-distribution alarm when the share of its images beyond the threshold is both
above `OOD_ALARM_SHARE` (5%, five times what validation gives) and unlikely under the validation rate (one-sided
binomial test, p < `OOD_ALARM_P_VALUE`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import binom

OOD_QUANTILE = 0.99
OOD_EXPECTED_SHARE = 1.0 - OOD_QUANTILE
OOD_ALARM_SHARE = 0.05
OOD_ALARM_P_VALUE = 0.01
OOD_METHOD = ("Mahalanobis distance of the penultimate features from the validation mean, Ledoit-Wolf shrunk "
              "covariance; threshold: 99th percentile of 2-fold out-of-fold validation distances")
MIN_ROWS = 20  # fewer validation rows: no feature model


@dataclass(frozen=True)
class FeatureModel:
    """Mean (D,) and precision (D, D) of the validation features, and the distance threshold."""

    mean: np.ndarray
    precision: np.ndarray
    threshold: float
    rows: int  # validation rows it was fitted on

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def distances(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """The ood_score of each row of `features` (N, D): sqrt((x - mean)^T precision (x - mean)), float64."""
        return mahalanobis(features, self.mean, self.precision)

    def to_dict(self) -> dict:
        """Stored form (tensors and plain numbers: `torch.load(weights_only=True)` reads it)."""
        return {"method": OOD_METHOD, "mean": torch.from_numpy(self.mean.astype(np.float32)),
                "precision": torch.from_numpy(self.precision.astype(np.float32)), "threshold": float(self.threshold),
                "quantile": OOD_QUANTILE, "rows": int(self.rows), "dim": self.dim}

    @classmethod
    def from_dict(cls, stored: dict) -> "FeatureModel":
        return cls(mean=np.asarray(stored["mean"], dtype=np.float64),
                   precision=np.asarray(stored["precision"], dtype=np.float64),
                   threshold=float(stored["threshold"]), rows=int(stored["rows"]))


def mahalanobis(features: np.ndarray | torch.Tensor, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Mahalanobis distances (N,) of the rows of `features` (N, D), in float64."""
    if isinstance(features, torch.Tensor):
        features = features.detach().float().cpu().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != mean.shape[0]:
        raise ValueError(f"features of shape {features.shape} do not match the reference's dimension {mean.shape[0]}")
    centred = features - mean
    squared = np.einsum("nd,de,ne->n", centred, precision, centred)
    return np.sqrt(np.maximum(squared, 0.0))


def _fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.covariance import LedoitWolf  # deferred: scikit-learn (slow import)

    estimate = LedoitWolf(assume_centered=False).fit(features)
    return estimate.location_, estimate.precision_


def fit_feature_model(features: np.ndarray, *, quantile: float = OOD_QUANTILE) -> FeatureModel | None:
    """The feature model of validation `features` (N, D) with its out-of-fold threshold (module docstring);
    None when there are fewer than MIN_ROWS finite rows."""
    features = np.asarray(features, dtype=np.float64)
    features = features[np.isfinite(features).all(axis=1)] if features.ndim == 2 else features.reshape(0, 0)
    if len(features) < MIN_ROWS:
        return None
    fold = np.arange(len(features)) % 2 == 0
    held_out = []
    for fitted_on in (fold, ~fold):
        mean, precision = _fit(features[fitted_on])
        held_out.append(mahalanobis(features[~fitted_on], mean, precision))
    threshold = float(np.quantile(np.concatenate(held_out), quantile))
    mean, precision = _fit(features)
    return FeatureModel(mean=mean, precision=precision, threshold=threshold, rows=len(features))


def ood_summary(scores: np.ndarray, threshold: float, *, expected_share: float = OOD_EXPECTED_SHARE) -> dict:
    """What a batch's ood_scores say: how many images are beyond `threshold`, their share, the one-sided binomial
    p-value of that many under the validation rate `expected_share`, and whether that raises the alarm (share
    above OOD_ALARM_SHARE and p < OOD_ALARM_P_VALUE). Plain numbers (JSON)."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    images, flagged = int(len(scores)), int((scores > threshold).sum())
    return {"images": images, "flagged": flagged, "share": flagged / images if images else 0.0,
            "threshold": float(threshold), "expected_share": expected_share,
            "p_value": ood_p_value(flagged, images, expected_share),
            "alarm": ood_alarm(flagged, images, expected_share),
            "median_score": float(np.median(scores)) if images else None,
            "p95_score": float(np.quantile(scores, 0.95)) if images else None}


def ood_p_value(flagged: int, images: int, expected_share: float = OOD_EXPECTED_SHARE) -> float:
    """P(at least `flagged` of `images` beyond the threshold) at the validation rate (one-sided binomial)."""
    return float(binom.sf(flagged - 1, images, expected_share)) if images else 1.0


def ood_alarm(flagged: int, images: int, expected_share: float = OOD_EXPECTED_SHARE) -> bool:
    """The alarm: a share above OOD_ALARM_SHARE that the validation rate makes unlikely (p < OOD_ALARM_P_VALUE)."""
    return bool(images) and flagged / images > OOD_ALARM_SHARE and \
        ood_p_value(flagged, images, expected_share) < OOD_ALARM_P_VALUE
