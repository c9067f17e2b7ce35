"""The out-of-distribution score: Mahalanobis distance, the threshold chosen on validation, the alarm."""
import io

import numpy as np
import pytest
import torch

from thorax_ray.monitoring.ood import MIN_ROWS, FeatureModel, fit_feature_model, ledoit_wolf, mahalanobis, ood_summary


def low_rank_features(rng, rows: int, *, dim: int = 64, rank: int = 2) -> np.ndarray:
    """Features of few degrees of freedom in many dimensions, as the metadata MLP's 64-wide embedding of three
    inputs (age, sex, view position), with a little noise in every dimension."""
    basis = np.random.default_rng(99).normal(size=(dim, rank))
    return (rng.normal(size=(rows, rank)) * np.linspace(3, 1, rank)) @ basis.T + 0.1 * rng.normal(size=(rows, dim))


def test_mahalanobis_is_the_formula():
    rng = np.random.default_rng(0)
    x, mean = rng.normal(size=(5, 3)), rng.normal(size=3)
    a = rng.normal(size=(3, 3))
    precision = a @ a.T + np.eye(3)
    expected = [np.sqrt((row - mean) @ precision @ (row - mean)) for row in x]
    np.testing.assert_allclose(mahalanobis(x, mean, precision), expected)
    np.testing.assert_allclose(mahalanobis(torch.from_numpy(x), mean, np.eye(3)), np.linalg.norm(x - mean, axis=1),
                               rtol=1e-6)


def test_features_of_another_dimension_are_refused():
    with pytest.raises(ValueError, match="do not match the reference's dimension 3"):
        mahalanobis(np.zeros((2, 4)), np.zeros(3), np.eye(3))


def test_the_threshold_flags_about_one_percent_of_images_drawn_like_validation():
    rng = np.random.default_rng(1)
    cov = np.diag(np.linspace(0.5, 3, 16))
    model = fit_feature_model(rng.multivariate_normal(np.zeros(16), cov, 3000))
    fresh = model.distances(rng.multivariate_normal(np.zeros(16), cov, 20000))
    assert 0.005 < (fresh > model.threshold).mean() < 0.02
    shifted = model.distances(rng.multivariate_normal(np.full(16, 1.5), cov, 2000))
    assert (shifted > model.threshold).mean() > 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_threshold_holds_for_features_of_few_degrees_of_freedom(seed):
    """The threshold and the stored model come from covariances fitted on almost as many rows (20 folds): with
    two folds (models of half the rows, shrunk harder than the stored one) 11-25% of such images drawn like
    validation were flagged instead of 1% (545 validation rows, the demo's)."""
    rng = np.random.default_rng(seed)
    model = fit_feature_model(low_rank_features(rng, 545))
    fresh = model.distances(low_rank_features(rng, 20000))
    assert 0.003 < (fresh > model.threshold).mean() < 0.025


@pytest.mark.parametrize("rows, dim", [(30, 8), (545, 64), (200, 300)])
def test_the_covariance_is_sklearns_ledoit_wolf(rows, dim):
    from sklearn.covariance import LedoitWolf

    x = low_rank_features(np.random.default_rng(rows), rows, dim=dim, rank=3) + 5.0  # an offset mean, as ReLU's
    expected = LedoitWolf().fit(x)
    mean, precision = ledoit_wolf(x)
    np.testing.assert_allclose(mean, expected.location_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(precision, expected.precision_, rtol=1e-6, atol=1e-8 * np.abs(precision).max())


def test_too_few_validation_rows_give_no_model():
    assert fit_feature_model(np.zeros((MIN_ROWS - 1, 4))) is None


def test_the_stored_model_loads_with_weights_only():
    rng = np.random.default_rng(2)
    model = fit_feature_model(rng.normal(size=(100, 4)))
    buffer = io.BytesIO()
    torch.save(model.to_dict(), buffer)
    buffer.seek(0)
    loaded = FeatureModel.from_dict(torch.load(buffer, weights_only=True))
    x = rng.normal(size=(10, 4))
    np.testing.assert_allclose(loaded.distances(x), model.distances(x), rtol=1e-5)
    assert loaded.threshold == model.threshold and loaded.rows == 100 and loaded.dim == 4


@pytest.mark.parametrize("flagged, images, alarm", [(1, 100, False), (10, 100, True), (2, 20, False),
                                                    (3, 20, True), (40, 1000, False), (80, 1000, True)])
def test_the_alarm_needs_a_share_above_5_percent_that_the_validation_rate_makes_unlikely(flagged, images, alarm):
    scores = np.r_[np.full(flagged, 10.0), np.zeros(images - flagged)]
    summary = ood_summary(scores, 5.0)
    assert (summary["flagged"], summary["images"], summary["alarm"]) == (flagged, images, alarm)
    assert summary["share"] == pytest.approx(flagged / images)
