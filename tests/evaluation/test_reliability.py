"""Calibration in the evaluation: ECE per finding before and after calibration, for scores with and without
the calibrated columns, and for one checkpoint (evaluate_checkpoint, its model and data replaced by stand-ins)."""
from types import SimpleNamespace

import numpy as np
import pytest

from tests.helpers import make_checkpoint
from thorax_ray.calibration import apply_calibration, describe_calibration, fit_calibration
from thorax_ray.evaluation import checkpoint as evaluation_checkpoint
from thorax_ray.evaluation.reliability import NO_COLUMNS, NOT_APPLIED, calibration_metrics
from thorax_ray.labels import FINDINGS
from thorax_ray.models.predict import Predictions


def _miscalibrated(n: int = 4000, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.5, 1.5, size=(n, len(FINDINGS)))
    labels = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(int)
    return labels, 1 / (1 + np.exp(-(2.5 * z + 1.0)))


def test_calibration_metrics_before_and_after():
    labels, raw = _miscalibrated()
    calibration = fit_calibration(labels[:2000], raw[:2000])  # fitted on "validation", measured on the rest
    calibrated = apply_calibration(calibration, raw[2000:])
    entry = calibration_metrics(labels[2000:], raw[2000:], calibrated, describe_calibration(calibration))
    assert entry["available"] and entry["applied"] and entry["method"] == "platt" and entry["note"] is None
    assert entry["bins"] == 15 and "equal-width" in entry["definition"]
    assert all(entry["ece_calibrated"][f] < entry["ece_raw"][f] for f in FINDINGS)
    assert entry["mean_ece_calibrated"] < 0.03 < 0.1 < entry["mean_ece_raw"]
    assert entry["positives"]["Mass"] == int(labels[2000:, FINDINGS.index("Mass")].sum())


def test_scores_without_calibrated_columns_or_calibration_are_named():
    labels, raw = _miscalibrated(n=300)
    missing = calibration_metrics(labels, raw, None, None)
    assert not missing["available"] and missing["ece_calibrated"] is None and missing["note"] == NO_COLUMNS
    assert missing["mean_ece_raw"] == pytest.approx(np.mean(list(missing["ece_raw"].values())))
    copied = calibration_metrics(labels, raw, raw.copy(), describe_calibration(None))
    assert copied["applied"] is False and copied["note"] == NOT_APPLIED
    assert copied["ece_calibrated"] == copied["ece_raw"]


@pytest.mark.parametrize("calibrated", [True, False])
def test_evaluate_checkpoint_reports_ece_before_and_after(calibrated, tmp_path, monkeypatch):
    labels, raw = _miscalibrated(n=2000, seed=1)
    calibration = fit_calibration(labels, raw) if calibrated else None
    make_checkpoint(tmp_path, size=32, payload={"calibration": calibration})
    rows = SimpleNamespace(iter_batches=lambda **_: iter(()))
    source = SimpleNamespace(split_hash="h", stored_size=32, dataset=lambda split, images: rows)
    monkeypatch.setattr(evaluation_checkpoint, "open_source", lambda config: source)
    monkeypatch.setattr(evaluation_checkpoint, "predict", lambda *a, **k: Predictions(
        image_index=[str(i) for i in range(len(labels))], labels=labels, probabilities=raw))
    result = evaluation_checkpoint.evaluate_checkpoint(str(tmp_path), "data", "val")["calibration"]
    assert result["available"] and result["applied"] is calibrated
    if calibrated:
        assert result["mean_ece_calibrated"] < result["mean_ece_raw"] / 3
    else:
        assert result["ece_calibrated"] == result["ece_raw"] and result["note"] == NOT_APPLIED
