"""Validation metrics computed on rank 0 from the gathered predictions."""
import numpy as np
import pytest
import torch

from thorax_ray.metrics import mean_binary_cross_entropy


def test_mean_binary_cross_entropy_is_torchs_unweighted_bce():
    rng = np.random.default_rng(0)
    labels, logits = rng.integers(0, 2, (64, 14)), rng.normal(0, 3, (64, 14))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(logits), torch.tensor(labels * 1.0))
    assert mean_binary_cross_entropy(labels, 1 / (1 + np.exp(-logits))) == pytest.approx(expected.item(), rel=1e-9)


def test_saturated_probabilities_are_clipped_not_infinite():
    assert np.isfinite(mean_binary_cross_entropy(np.array([[1, 0]]), np.array([[0.0, 1.0]])))
    with pytest.raises(ValueError, match="one equal, non-empty shape"):
        mean_binary_cross_entropy(np.zeros((2, 14)), np.zeros((3, 14)))
