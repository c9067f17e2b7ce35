"""Per-finding calibration fitted on validation (thorax_ray.calibration): fitting, applying, the calibration error
and reliability curves, and the calibration travelling in the checkpoint."""
import json

import numpy as np
import pytest
import torch

from thorax_ray.calibration import (MIN_SLOPE, apply_calibration, calibrated_thresholds, describe_calibration,
                                    ece_per_finding, expected_calibration_error, fit_calibration, reliability_curve)
from thorax_ray.checkpoint import CheckpointPayload, load_payload, save_checkpoint
from thorax_ray.labels import FINDINGS
from thorax_ray.metrics import per_class_auroc
from thorax_ray.models import create_model


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _case(n: int = 8000, *, scale: float = 1.0, offset: float = 0.0, seed: int = 0):
    """Labels drawn from sigmoid(z) (so sigmoid(z) is perfectly calibrated) and a model that reports
    sigmoid(scale * z + offset) instead."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.0, 2.0, size=(n, len(FINDINGS)))
    labels = (rng.random(z.shape) < _sigmoid(z)).astype(int)
    return labels, _sigmoid(scale * z + offset), _sigmoid(z)


def test_temperature_scaling_recovers_a_known_temperature_and_lowers_ece():
    labels, overconfident, _ = _case(scale=3.0)  # logits three times too large: T = 3
    calibration = fit_calibration(labels, overconfident, method="temperature")
    assert calibration["method"] == "temperature" and calibration["fitted_on"] == "validation"
    for finding, entry in calibration["findings"].items():
        assert entry["temperature"] == pytest.approx(3.0, rel=0.08), finding
        assert entry["b"] == 0.0 and entry["fitted"]
        assert entry["ece_after"] < 0.025 < 0.1 < entry["ece_before"]
    calibrated = apply_calibration(calibration, overconfident)
    assert np.mean(list(ece_per_finding(labels, calibrated).values())) < 0.025


def test_platt_removes_an_offset_that_temperature_cannot():
    """A loss that up-weights positives shifts every logit: one temperature cannot undo it, Platt's bias can."""
    labels, shifted, _ = _case(scale=1.5, offset=2.0, seed=1)
    platt = fit_calibration(labels, shifted)
    temperature = fit_calibration(labels, shifted, method="temperature")
    assert platt["method"] == "platt"
    entry = platt["findings"]["Mass"]
    assert entry["a"] == pytest.approx(1 / 1.5, rel=0.08) and entry["b"] == pytest.approx(-2.0 / 1.5, abs=0.12)
    for finding in FINDINGS:
        assert platt["findings"][finding]["ece_after"] < 0.025
        assert platt["findings"][finding]["ece_after"] < temperature["findings"][finding]["ece_after"] / 3
    json.dumps(platt)  # plain types only: stored in the checkpoint and checkpoint.json as it is


def test_ece_of_a_calibrated_set_is_near_zero_and_hand_computed_otherwise():
    labels, _, calibrated = _case(n=30000, seed=2)
    assert max(ece_per_finding(labels, calibrated).values()) < 0.015
    # bins of 0.5: [0, 0.5] holds 0.1, 0.2, 0.5 (mean 0.2667, 1 positive of 3), (0.5, 1] holds 0.9 (a negative)
    y, p = [0, 1, 0, 0], [0.1, 0.2, 0.5, 0.9]
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(3 / 4 * abs(1 / 3 - 0.8 / 3) + 1 / 4 * 0.9)
    assert expected_calibration_error([], [], bins=2) is None
    curve = reliability_curve(y, p, bins=2)
    assert curve["lower"] == [0.0, 0.5] and curve["upper"] == [0.5, 1.0] and curve["count"] == [3, 1]
    assert curve["confidence"] == pytest.approx([0.8 / 3, 0.9]) and curve["accuracy"] == pytest.approx([1 / 3, 0.0])
    assert reliability_curve([1, 0], [0.0, 1.0], bins=15)["count"] == [1, 1]  # 0 in the first bin, 1 in the last


def test_degenerate_findings_keep_the_identity_and_say_why():
    labels, probabilities, _ = _case(n=2000, scale=2.0, seed=3)
    labels[:, FINDINGS.index("Hernia")] = 0  # no positives
    labels[:, FINDINGS.index("Edema")] = 1  # no negatives
    probabilities[:, FINDINGS.index("Fibrosis")] = 0.3  # every score equal
    calibration = fit_calibration(labels, probabilities)
    reasons = {f: e["reason"] for f, e in calibration["findings"].items() if not e["fitted"]}
    assert reasons == {"Hernia": "no positives in the fitting rows", "Edema": "no negatives in the fitting rows",
                       "Fibrosis": "every score equal"}
    assert calibration["findings"]["Hernia"]["n_positives"] == 0
    assert calibration["findings"]["Edema"]["n_negatives"] == 0
    for finding in reasons:
        assert (calibration["findings"][finding]["a"], calibration["findings"][finding]["b"]) == (1.0, 0.0)
    calibrated = apply_calibration(calibration, probabilities)
    identity = [FINDINGS.index(f) for f in reasons]
    assert np.array_equal(calibrated[:, identity], probabilities[:, identity])  # the raw value, exactly
    assert describe_calibration(calibration)["identity"] == sorted(reasons)
    empty = fit_calibration(np.zeros((0, 14), int), np.zeros((0, 14)))
    assert not any(e["fitted"] for e in empty["findings"].values())
    assert empty["findings"]["Mass"]["ece_before"] is None


def test_scores_that_rank_a_finding_backwards_get_a_nearly_flat_increasing_map():
    labels, probabilities, _ = _case(n=3000, seed=7)
    backwards = 1 - probabilities  # validation AUROC below 0.5 for every finding
    calibration = fit_calibration(labels, backwards)
    calibrated = apply_calibration(calibration, backwards)
    for i, finding in enumerate(FINDINGS):
        entry = calibration["findings"][finding]
        assert entry["fitted"] and entry["a"] == MIN_SLOPE
        assert calibrated[:, i].mean() == pytest.approx(labels[:, i].mean(), abs=0.02)  # about the prevalence
        assert entry["ece_after"] < entry["ece_before"] / 5
    assert per_class_auroc(labels, calibrated) == per_class_auroc(labels, backwards)  # ranking kept


def test_apply_is_monotone_per_finding_so_auroc_and_thresholds_carry_over():
    labels, probabilities, _ = _case(n=3000, scale=0.5, offset=-1.0, seed=4)
    calibration = fit_calibration(labels, probabilities)
    calibrated = apply_calibration(calibration, probabilities)
    assert not np.allclose(calibrated, probabilities)
    for i in range(len(FINDINGS)):
        order = np.argsort(probabilities[:, i], kind="stable")
        assert (np.diff(calibrated[order, i]) > 0).all()
    assert per_class_auroc(labels, calibrated) == per_class_auroc(labels, probabilities)
    thresholds = {f: 0.2 + 0.04 * i for i, f in enumerate(FINDINGS)}
    thresholds["Hernia"] = None
    mapped = calibrated_thresholds(calibration, thresholds)
    assert mapped["Hernia"] is None
    for i, finding in enumerate(FINDINGS[:-1]):
        raw_side = probabilities[:, i] >= thresholds[finding]
        assert ((calibrated[:, i] >= mapped[finding]) == raw_side).mean() > 0.999  # equal up to float rounding


def test_no_calibration_repeats_the_raw_probabilities_and_bad_input_is_refused():
    labels, probabilities, _ = _case(n=200, seed=5)
    copied = apply_calibration(None, probabilities)
    assert np.array_equal(copied, probabilities) and copied is not probabilities
    assert describe_calibration(None)["applied"] is False
    calibration = fit_calibration(labels, probabilities)
    with pytest.raises(ValueError, match="label order"):
        apply_calibration({**calibration, "label_order": list(reversed(FINDINGS))}, probabilities)
    with pytest.raises(ValueError, match="unknown calibration method"):
        fit_calibration(labels, probabilities, method="isotonic")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_calibration(labels, probabilities * 2)
    with pytest.raises(ValueError, match=r"expected \(N, 14\)"):
        apply_calibration(calibration, probabilities[:, :3])


def _payload(model, **fields):
    return CheckpointPayload(model_name="small_cnn", model_build_config=model.build_config,
                             model_state=model.state_dict(), preprocessing={"size": 32}, **fields)


def test_checkpoint_round_trip_with_and_without_calibration(tmp_path):
    labels, probabilities, _ = _case(n=500, scale=2.0, seed=6)
    calibration = fit_calibration(labels, probabilities)
    model = create_model("small_cnn")
    (tmp_path / "with").mkdir()
    save_checkpoint(str(tmp_path / "with"), _payload(model, calibration=calibration))
    stored = torch.load(tmp_path / "with" / "model.pt", weights_only=True)  # plain types only
    assert stored["calibration"] == calibration
    assert load_payload(str(tmp_path / "with")).calibration == calibration
    assert json.loads((tmp_path / "with" / "checkpoint.json").read_text())["calibration"]["method"] == "platt"
    # a checkpoint written before the field existed loads with None
    (tmp_path / "old").mkdir()
    save_checkpoint(str(tmp_path / "old"), _payload(model))
    old = torch.load(tmp_path / "old" / "model.pt", weights_only=True)
    torch.save({k: v for k, v in old.items() if k != "calibration"}, tmp_path / "old" / "model.pt")
    assert load_payload(str(tmp_path / "old")).calibration is None
