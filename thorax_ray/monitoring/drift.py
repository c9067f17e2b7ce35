"""Drift of one finding's probabilities in a batch against the validation distribution, by two statistics:

- **Population stability index** (PSI) over the validation deciles of that finding (`reference.py` stores the
  cut points and the validation counts): PSI = sum_b (a_b - e_b) ln(a_b / e_b), with a_b and e_b the batch's
  and validation's shares of bin b, each bin's count plus `PSI_SMOOTHING` (0.5) so an empty bin stays finite.
  The usual reading: below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a significant shift.
- **Kolmogorov-Smirnov** statistic D = sup_x |F_batch(x) - F_validation(x)|, against the validation quantile
  function stored at 1,001 levels (F_validation interpolated between them: D is exact to about 0.001), with
  the two-sample p-value of D for the batch's and validation's sizes (scipy's `kstwo`).

A finding **drifted** when its PSI is at least `PSI_DRIFT` (0.25) *and* its KS p-value is below `KS_P_VALUE`
(0.01) divided by the 14 findings (Bonferroni: a batch drawn like the validation images flags some finding with
probability at most about 1%): a large shift that the batch's size cannot explain. PSI alone grows with sampling noise in small
batches (about (bins - 1) / n for n images drawn from the validation distribution: 0.18 for 50 images), and a
p-value alone flags negligible shifts in large ones. `moderate`: PSI at least `PSI_MODERATE` (0.1) without
being a drift; `stable`: below 0.1.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import kstwo

from thorax_ray.labels import FINDINGS

PSI_MODERATE = 0.1
PSI_DRIFT = 0.25
KS_P_VALUE = 0.01  # for the 14 findings together: each finding's p-value is compared with KS_P_VALUE / 14
FINDING_P_VALUE = KS_P_VALUE / len(FINDINGS)
PSI_SMOOTHING = 0.5
STABLE, MODERATE, DRIFT = "stable", "moderate", "drift"
SUMMARY_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def bin_counts(values: np.ndarray, edges: np.ndarray | list[float]) -> np.ndarray:
    """Counts of `values` in the len(edges) + 1 bins cut at `edges` (bin b holds edges[b-1] <= v < edges[b])."""
    edges = np.asarray(edges, dtype=np.float64)
    index = np.searchsorted(edges, np.asarray(values, dtype=np.float64), side="right")
    return np.bincount(index, minlength=len(edges) + 1)


def smoothed_shares(counts: np.ndarray | list[int]) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64) + PSI_SMOOTHING
    return counts / counts.sum()


def population_stability_index(actual_counts, expected_counts) -> float:
    """PSI of a batch's bin counts against validation's (module docstring), each smoothed by PSI_SMOOTHING."""
    if len(actual_counts) != len(expected_counts):
        raise ValueError(f"{len(actual_counts)} batch bins against {len(expected_counts)} validation bins")
    actual, expected = smoothed_shares(actual_counts), smoothed_shares(expected_counts)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def reference_cdf(x: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """F_validation(x) from the quantile function sampled at equally spaced levels 0..1 (`quantiles`, sorted)."""
    levels = np.linspace(0.0, 1.0, len(quantiles))
    return np.interp(np.asarray(x, dtype=np.float64), np.asarray(quantiles, dtype=np.float64), levels,
                     left=0.0, right=1.0)


def ks_statistic(values: np.ndarray, quantiles: np.ndarray) -> float:
    """sup_x |F_batch(x) - F_validation(x)|: checked on both sides of every jump of the batch's ECDF."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    m = len(values)
    if m == 0:
        return 0.0
    cdf = reference_cdf(values, quantiles)
    above = np.arange(1, m + 1) / m - cdf
    below = cdf - np.arange(0, m) / m
    return float(max(above.max(), below.max(), 0.0))


def ks_p_value(statistic: float, batch_rows: int, reference_rows: int) -> float:
    """Two-sample p-value of D for samples of `batch_rows` and `reference_rows` (Kolmogorov's distribution at
    the effective size n m / (n + m), scipy.stats.kstwo)."""
    if batch_rows < 1 or reference_rows < 1:
        return 1.0
    effective = max(1, round(batch_rows * reference_rows / (batch_rows + reference_rows)))
    return float(kstwo.sf(statistic, effective))


def drift_status(psi: float, p_value: float) -> str:
    if psi >= PSI_DRIFT and p_value < FINDING_P_VALUE:
        return DRIFT
    return MODERATE if psi >= PSI_MODERATE else STABLE


@dataclass(frozen=True)
class FindingDrift:
    """One finding in one batch: its probability summary and its drift against validation."""

    images: int
    mean: float
    quantiles: dict[str, float]  # "p05", "p25", "p50", "p75", "p95"
    psi: float | None = None
    counts: list[int] | None = None  # the batch's counts in the validation bins (nights add them up)
    ks: float | None = None
    ks_p_value: float | None = None
    status: str | None = None  # stable | moderate | drift; None: no validation reference
    validation_mean: float | None = None
    validation_counts: list[int] | None = None  # validation rows per bin (a night's PSI: its runs' counts summed)

    def to_dict(self) -> dict:
        return asdict(self)


def probability_summary(values: np.ndarray) -> dict:
    """Mean and the SUMMARY_QUANTILES of one finding's probabilities (plain floats)."""
    values = np.asarray(values, dtype=np.float64)
    levels = np.quantile(values, SUMMARY_QUANTILES) if len(values) else [float("nan")] * len(SUMMARY_QUANTILES)
    return {"images": int(len(values)), "mean": float(values.mean()) if len(values) else float("nan"),
            "quantiles": {f"p{round(q * 100):02d}": float(v) for q, v in zip(SUMMARY_QUANTILES, levels)}}


def finding_drift(values: np.ndarray, reference=None) -> FindingDrift:
    """The summary of one finding's batch probabilities and, with its `reference.FindingReference`, the drift."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    summary = probability_summary(values)
    if reference is None or not len(values):
        return FindingDrift(**summary)
    counts = bin_counts(values, reference.edges)
    psi = population_stability_index(counts, reference.counts)
    ks = ks_statistic(values, reference.quantiles)
    p_value = ks_p_value(ks, len(values), reference.rows)
    return FindingDrift(**summary, psi=psi, counts=[int(c) for c in counts], ks=ks, ks_p_value=p_value,
                        status=drift_status(psi, p_value), validation_mean=reference.mean,
                        validation_counts=[int(c) for c in reference.counts])
