"""PSI and KS math of thorax_ray.monitoring.drift, and the rule that calls a finding drifted."""
import numpy as np
import pytest
from scipy import stats

from thorax_ray.monitoring.drift import (DRIFT, FINDING_P_VALUE, MODERATE, PSI_SMOOTHING, STABLE, bin_counts,
                                         drift_status, finding_drift, ks_p_value, ks_statistic,
                                         population_stability_index)
from thorax_ray.monitoring.reference import FindingReference


def reference_of(values: np.ndarray) -> FindingReference:
    edges = np.unique(np.quantile(values, np.linspace(0.1, 0.9, 9)))
    return FindingReference(edges=edges, counts=bin_counts(values, edges),
                            quantiles=np.quantile(values, np.linspace(0, 1, 1001)), mean=float(values.mean()),
                            rows=len(values))


def test_bin_counts_put_a_value_on_an_edge_in_the_upper_bin():
    assert bin_counts([0.0, 0.1, 0.15, 0.2, 0.9], [0.1, 0.2]).tolist() == [1, 2, 2]


def test_psi_is_zero_for_equal_shares_and_matches_the_formula():
    assert population_stability_index([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0, abs=0.01)
    actual, expected = np.array([50, 30, 20]), np.array([20, 30, 50])
    a = (actual + PSI_SMOOTHING) / (actual + PSI_SMOOTHING).sum()
    e = (expected + PSI_SMOOTHING) / (expected + PSI_SMOOTHING).sum()
    assert population_stability_index(actual, expected) == pytest.approx(float(np.sum((a - e) * np.log(a / e))))


def test_an_empty_bin_keeps_psi_finite():
    assert np.isfinite(population_stability_index([0, 10, 0], [5, 5, 5]))


def test_psi_refuses_bins_that_do_not_match():
    with pytest.raises(ValueError, match="2 batch bins against 3"):
        population_stability_index([1, 2], [1, 2, 3])


def test_ks_statistic_against_the_quantile_grid_matches_the_exact_one():
    rng = np.random.default_rng(0)
    batch = rng.beta(2, 5, 300)
    grid = stats.beta(2, 2).ppf(np.linspace(0, 1, 1001))
    exact = stats.ks_1samp(batch, stats.beta(2, 2).cdf).statistic
    assert ks_statistic(batch, grid) == pytest.approx(exact, abs=2e-3)


def test_ks_p_value_is_the_two_sample_one():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 200), rng.normal(0.3, 1, 3000)
    expected = stats.ks_2samp(a, b, method="asymp")
    assert ks_p_value(expected.statistic, 200, 3000) == pytest.approx(expected.pvalue, rel=0.05)


@pytest.mark.parametrize("psi, p_value, status", [
    (0.05, 1e-9, STABLE), (0.1, 0.5, MODERATE), (0.24, 1e-9, MODERATE), (0.3, 0.5, MODERATE),
    (0.25, FINDING_P_VALUE * 0.99, DRIFT), (0.25, FINDING_P_VALUE, MODERATE)])
def test_a_finding_drifts_on_a_large_psi_that_its_batch_size_cannot_explain(psi, p_value, status):
    assert drift_status(psi, p_value) == status


def test_a_small_batch_from_the_validation_distribution_is_not_a_drift_though_its_psi_is_noisy():
    rng = np.random.default_rng(2)
    reference = reference_of(rng.beta(1, 8, 5000))
    statuses = [finding_drift(rng.beta(1, 8, 30), reference).status for _ in range(200)]
    assert DRIFT not in statuses
    assert MODERATE in statuses  # PSI alone would have raised false alarms


def test_a_shifted_batch_drifts_and_the_summary_says_how():
    rng = np.random.default_rng(3)
    reference = reference_of(rng.beta(1, 8, 5000))
    drift = finding_drift(rng.beta(3, 6, 100), reference)
    assert drift.status == DRIFT and drift.psi > 0.25 and drift.ks_p_value < 1e-6
    assert sum(drift.counts) == 100 and len(drift.counts) == len(reference.counts)
    assert drift.quantiles["p05"] < drift.quantiles["p50"] < drift.quantiles["p95"]


def test_without_a_reference_only_the_summary():
    drift = finding_drift(np.array([0.1, 0.2, np.nan]))
    assert drift.images == 2 and drift.mean == pytest.approx(0.15) and drift.psi is None and drift.status is None
