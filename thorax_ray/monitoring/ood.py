"""The per-image out-of-distribution score: the Mahalanobis distance of an image's penultimate features
(thorax_ray.monitoring.features) from the validation features, with a Ledoit-Wolf shrunk covariance (a
well-conditioned precision matrix even when the feature dimension approaches the number of validation rows).

The threshold is chosen on validation without reusing the rows a covariance was fitted on: the validation
rows are split into `OOD_FOLDS` folds (by position), each fold's distances are measured under the model
fitted on the other folds, and the threshold is the `OOD_QUANTILE` (99th) percentile of those out-of-fold
distances. So about 1% of images drawn like the validation images are flagged (`OOD_EXPECTED_SHARE`). The
stored mean and precision are then fitted on every validation row. The fold models are fitted on almost as
many rows as the stored one (95%), so that they are shrunk alike: with two folds, features of few degrees of
freedom in many dimensions (the metadata MLP's embedding of three inputs) had their threshold measured under
models shrunk far harder than the stored one, and 11-25% of images drawn like validation were flagged.

All the models come from one pass over the rows (`fold_models`): each fold's scatter is subtracted from the
total, and the Ledoit-Wolf shrinkage is computed from the rows' moments by the formula scikit-learn's
`LedoitWolf` uses (tested equal to it), so 20 folds cost about one fit plus 20 inversions.

A run raises the out-of-distribution alarm when the share of its images beyond the threshold is both
above `OOD_ALARM_SHARE` (5%, five times what validation gives) and unlikely under the validation rate (one-sided
binomial test, p < `OOD_ALARM_P_VALUE`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import pinvh
from scipy.stats import binom

OOD_QUANTILE = 0.99
OOD_EXPECTED_SHARE = 1.0 - OOD_QUANTILE
OOD_ALARM_SHARE = 0.05
OOD_ALARM_P_VALUE = 0.01
OOD_FOLDS = 20
OOD_METHOD = ("Mahalanobis distance of the penultimate features from the validation mean, Ledoit-Wolf shrunk "
              f"covariance; threshold: 99th percentile of {OOD_FOLDS}-fold out-of-fold validation distances")
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
    squared = np.einsum("nd,nd->n", centred @ precision, centred)  # the product through BLAS: a three-operand
    # einsum summed D x D terms per row in a plain loop (8,600 x 1,024 features took 10 s)
    return np.sqrt(np.maximum(squared, 0.0))


def ledoit_wolf(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and precision (D, D) of the Ledoit-Wolf shrunk covariance of `features` (N, D): scikit-learn's
    `LedoitWolf().fit(features)` `location_` and `precision_`."""
    return fold_models(features, np.zeros(len(features), dtype=int), folds=0)[-1]


def fold_models(features: np.ndarray, fold: np.ndarray, *, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The Ledoit-Wolf (mean, precision) fitted on the rows outside each of folds 0..folds-1 (`fold`: each row's
    fold), then on every row: folds + 1 models from one pass over the rows (module docstring)."""
    features = np.asarray(features, dtype=np.float64)
    centre = features.mean(axis=0)
    x = features - centre  # the scatter below subtracts means of this order, not of the raw features'
    norms = np.einsum("nd,nd->n", x, x)
    total_sum, total_scatter = x.sum(axis=0), x.T @ x
    models = []
    for k in [*range(folds), None]:
        inside = np.ones(len(x), dtype=bool) if k is None else fold != k
        rows = int(inside.sum())
        if k is None:
            row_sum, scatter = total_sum, total_scatter
        else:
            row_sum, scatter = total_sum - x[~inside].sum(axis=0), total_scatter - x[~inside].T @ x[~inside]
        mean = row_sum / rows
        covariance = scatter / rows - np.outer(mean, mean)  # the empirical covariance of the rows inside
        centred_norms = norms[inside] - 2.0 * x[inside] @ mean + mean @ mean  # ||x_i - mean||^2
        shrinkage = _ledoit_wolf_shrinkage(covariance, fourth_moment=float(np.sum(centred_norms ** 2)), rows=rows)
        mu = np.trace(covariance) / len(mean)
        shrunk = (1.0 - shrinkage) * covariance
        shrunk.flat[:: len(mean) + 1] += shrinkage * mu
        models.append((mean + centre, pinvh(shrunk, check_finite=False)))
    return models


def _ledoit_wolf_shrinkage(covariance: np.ndarray, *, fourth_moment: float, rows: int) -> float:
    """Ledoit and Wolf's (2004) shrinkage intensity as `sklearn.covariance.ledoit_wolf_shrinkage` computes it,
    from the empirical covariance S (D, D) of `rows` rows and the sum over them of ||x_i - mean||^4."""
    if rows == 1:
        return 0.0
    dim = len(covariance)
    trace = float(np.trace(covariance))
    mu = trace / dim
    squared = float(np.sum(covariance ** 2))  # ||S||_F^2
    beta = (fourth_moment / rows - squared) / (dim * rows)
    delta = (squared - 2.0 * mu * trace + dim * mu ** 2) / dim
    beta = min(beta, delta)
    return 0.0 if beta == 0 else beta / delta


def fit_feature_model(features: np.ndarray, *, quantile: float = OOD_QUANTILE) -> FeatureModel | None:
    """The feature model of validation `features` (N, D) with its out-of-fold threshold (module docstring);
    None when there are fewer than MIN_ROWS finite rows."""
    features = np.asarray(features, dtype=np.float64)
    features = features[np.isfinite(features).all(axis=1)] if features.ndim == 2 else features.reshape(0, 0)
    if len(features) < MIN_ROWS:
        return None
    folds = min(OOD_FOLDS, len(features))
    fold = np.arange(len(features)) % folds
    *fitted_without, (mean, precision) = fold_models(features, fold, folds=folds)
    held_out = [mahalanobis(features[fold == k], *fitted_without[k]) for k in range(folds)]
    threshold = float(np.quantile(np.concatenate(held_out), quantile))
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
