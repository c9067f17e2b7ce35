"""Operating points chosen on validation predictions (training stores them in the checkpoint), bootstrap-stabilised
for findings with few validation positives."""
import numpy as np
import pytest

from thorax_ray.labels import FINDINGS
from thorax_ray.thresholds import MIN_POSITIVES, choose_thresholds, operating_points, stabilised_thresholds


def test_operating_points_hand_computed():
    labels = np.zeros((6, 14), dtype=int)
    scores = np.tile(np.linspace(0.1, 0.6, 6)[:, None], (1, 14))
    labels[3:, 0] = 1  # Atelectasis separable between 0.3 and 0.4: Youden's J picks the midpoint 0.35
    labels[[1, 4], 1] = 1  # Cardiomegaly at 0.2 and 0.5
    labels[:, 13] = 1  # Hernia: no negatives in validation -> no threshold
    points = operating_points(labels, scores, min_positives=0)  # the plain rule, as chosen by hand below
    assert points["rule"] == "youden" and points["chosen_on"] == "validation" and points["n_images"] == 6
    thresholds = points["thresholds"]
    assert list(thresholds) == list(FINDINGS)
    assert thresholds["Atelectasis"] == pytest.approx(0.35)
    # Cardiomegaly: J = TPR - FPR; >= 0.15 gives 2/2 - 3/4 = 0.25, >= 0.45 gives 1/2 - 1/4 = 0.25 (first kept)
    assert thresholds["Cardiomegaly"] == pytest.approx(0.15)
    assert thresholds["Effusion"] is None and thresholds["Hernia"] is None  # no positives / no negatives
    assert thresholds == choose_thresholds(labels, scores, rule="youden")  # the evaluation's own selection
    assert operating_points(labels, scores, rule="f1", min_positives=0)["thresholds"]["Cardiomegaly"] == \
        pytest.approx(0.15)
    assert points["support"]["Atelectasis"] == {"positives": 3, "negatives": 3, "bootstrapped": False}
    assert points["support"]["Hernia"] == {"positives": 6, "negatives": 0, "bootstrapped": False}


def _few_positives_case(seed: int = 0):
    """Validation rows where Atelectasis has 12 positives (few) and Cardiomegaly 400 (many), with overlapping
    scores; the other findings have none."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((1000, 14), dtype=int)
    labels[rng.choice(1000, 12, replace=False), 0] = 1
    labels[rng.choice(1000, 400, replace=False), 1] = 1
    scores = np.clip(0.3 + 0.25 * labels + rng.normal(0, 0.12, labels.shape), 0, 1)
    return labels, scores


def test_few_positives_thresholds_are_bootstrap_stabilised_deterministically():
    labels, scores = _few_positives_case()
    points = operating_points(labels, scores)
    support, thresholds = points["support"], points["thresholds"]
    assert support["Atelectasis"] == {"positives": 12, "negatives": 988, "bootstrapped": True}
    assert support["Cardiomegaly"] == {"positives": 400, "negatives": 600, "bootstrapped": False}
    assert support["Mass"] == {"positives": 0, "negatives": 1000, "bootstrapped": False}
    plain = choose_thresholds(labels, scores)
    assert thresholds["Cardiomegaly"] == plain["Cardiomegaly"]  # enough positives: the plain rule
    assert thresholds["Mass"] is None
    assert scores[:, 0].min() < thresholds["Atelectasis"] < scores[:, 0].max()
    assert points["stabilisation"]["min_positives"] == MIN_POSITIVES == 30
    assert operating_points(labels, scores) == points  # fixed seed: the same thresholds every time
    again, _ = stabilised_thresholds(labels, scores, seed=1)
    assert again["Cardiomegaly"] == plain["Cardiomegaly"] and again["Atelectasis"] is not None


def test_bootstrap_stabilised_thresholds_vary_less_over_validation_draws():
    """Over independent validation draws of a finding with 12 positives, the stabilised threshold spreads less
    than the plain Youden threshold (the point of stabilising it)."""
    plain, stabilised = [], []
    for seed in range(10):
        labels, scores = _few_positives_case(seed)
        plain.append(choose_thresholds(labels, scores)["Atelectasis"])
        stabilised.append(stabilised_thresholds(labels, scores, n_boot=51)[0]["Atelectasis"])
    assert np.std(stabilised) < np.std(plain)
