"""Operating points chosen on validation predictions (training stores them in the checkpoint)."""
import numpy as np
import pytest

from thorax_ray.labels import FINDINGS
from thorax_ray.thresholds import choose_thresholds, operating_points


def test_operating_points_hand_computed():
    labels = np.zeros((6, 14), dtype=int)
    scores = np.tile(np.linspace(0.1, 0.6, 6)[:, None], (1, 14))
    labels[3:, 0] = 1  # Atelectasis separable between 0.3 and 0.4: Youden's J picks the midpoint 0.35
    labels[[1, 4], 1] = 1  # Cardiomegaly at 0.2 and 0.5
    labels[:, 13] = 1  # Hernia: no negatives in validation -> no threshold
    points = operating_points(labels, scores)
    assert points["rule"] == "youden" and points["chosen_on"] == "validation" and points["n_images"] == 6
    thresholds = points["thresholds"]
    assert list(thresholds) == list(FINDINGS)
    assert thresholds["Atelectasis"] == pytest.approx(0.35)
    # Cardiomegaly: J = TPR - FPR; >= 0.15 gives 2/2 - 3/4 = 0.25, >= 0.45 gives 1/2 - 1/4 = 0.25 (first kept)
    assert thresholds["Cardiomegaly"] == pytest.approx(0.15)
    assert thresholds["Effusion"] is None and thresholds["Hernia"] is None  # no positives / no negatives
    assert thresholds == choose_thresholds(labels, scores, rule="youden")  # the evaluation's own selection
    assert operating_points(labels, scores, rule="f1")["thresholds"]["Cardiomegaly"] == pytest.approx(0.15)
