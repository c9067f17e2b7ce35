"""Classification evaluation: Mann-Whitney AUROC, patient bootstrap, paired comparison, thresholds."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from thorax_ray.evaluation import classification as C
from thorax_ray.labels import FINDINGS
from thorax_ray.thresholds import choose_thresholds, thresholds_document, thresholds_from_document

K = len(FINDINGS)


def _tile(column: np.ndarray) -> np.ndarray:
    """The same column for all 14 findings."""
    return np.repeat(np.asarray(column)[:, None], K, axis=1)


def _random_case(n_patients=60, per_patient=3, seed=0, signal=1.0, prevalence=0.3):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_patients), per_patient)
    labels = (rng.random((len(groups), K)) < prevalence).astype(np.int8)
    scores = signal * labels + rng.normal(size=labels.shape)
    return labels, scores, groups


# ------------------------------------------------------------------------------------------- AUROC

def test_mann_whitney_hand_computed_case_matches_sklearn():
    labels, scores = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    # pairs (pos, neg): (0.35, 0.1) win, (0.35, 0.4) loss, (0.8, 0.1) win, (0.8, 0.4) win -> 3 / 4
    assert C.auroc_mann_whitney(labels, scores) == pytest.approx(0.75)
    assert roc_auc_score(labels, scores) == pytest.approx(0.75)


def test_mann_whitney_ties_and_weights_match_sklearn_on_expanded_rows():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300), 1)  # many ties
    weights = rng.integers(0, 4, 300)
    expanded = np.repeat(np.arange(300), weights)
    assert C.auroc_mann_whitney(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert C.auroc_mann_whitney(labels, scores, weights) == pytest.approx(
        roc_auc_score(labels[expanded], scores[expanded]), abs=1e-12)
    # one tie between a positive and a negative counts one half
    assert C.auroc_mann_whitney([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert C.auroc_mann_whitney([1, 1], [0.2, 0.3]) is None


def test_bootstrap_resamples_match_sklearn_on_the_drawn_images():
    labels, scores, groups = _random_case(n_patients=25, per_patient=4, seed=2)
    scores = np.round(scores, 1)
    weights = C.bootstrap_image_weights(groups, n_boot=6, seed=5)
    boot = C.bootstrap_aurocs(labels, [scores], groups, n_boot=6, seed=5)[0]
    for b in range(6):
        rows = np.repeat(np.arange(len(groups)), weights[b])
        for c in range(K):
            y = labels[rows, c]
            expected = roc_auc_score(y, scores[rows, c]) if 0 < y.sum() < len(y) else np.nan
            assert boot[b, c] == pytest.approx(expected, abs=1e-12, nan_ok=True)


# --------------------------------------------------------------------------------------- bootstrap

def test_every_resample_draws_whole_patients():
    groups = np.array(["p3", "p1", "p3", "p2", "p1", "p3", "p4"])  # unsorted, string ids
    weights = C.bootstrap_image_weights(groups, n_boot=200, seed=0)
    assert weights.shape == (200, 7)
    for patient in np.unique(groups):
        member = weights[:, groups == patient]
        assert (member == member[:, :1]).all()  # all images of a patient come along together
    per_patient = np.stack([weights[:, np.flatnonzero(groups == p)[0]] for p in np.unique(groups)], axis=1)
    assert (per_patient.sum(axis=1) == 4).all()  # 4 patients drawn with replacement per resample
    assert (per_patient == 0).any() and (per_patient > 1).any()  # with replacement: some left out, some twice
    # deterministic for a seed, different for another
    assert (C.bootstrap_image_weights(groups, 200, seed=0) == weights).all()
    assert not (C.bootstrap_image_weights(groups, 200, seed=1) == weights).all()


def test_patient_bootstrap_is_wider_than_image_bootstrap_when_images_are_duplicated():
    rng = np.random.default_rng(3)
    n_patients, copies = 40, 25
    patient_labels = (rng.random((n_patients, K)) < 0.5).astype(np.int8)
    patient_labels[0], patient_labels[1] = 0, 1  # both classes present
    patient_scores = patient_labels * 0.8 + rng.normal(size=(n_patients, K))
    labels = np.repeat(patient_labels, copies, axis=0)  # every patient's image duplicated 25 times
    scores = np.repeat(patient_scores, copies, axis=0)
    groups = np.repeat(np.arange(n_patients), copies)
    by_patient = C.bootstrap_auroc_ci(labels, scores, groups, n_boot=300, seed=0)
    by_image = C.bootstrap_auroc_ci(labels, scores, None, n_boot=300, seed=0)
    widths_patient = np.array([by_patient[f][1] - by_patient[f][0] for f in FINDINGS])
    widths_image = np.array([by_image[f][1] - by_image[f][0] for f in FINDINGS])
    # duplicated images are not independent evidence: the patient CI is several times wider
    assert (widths_patient > 2 * widths_image).all()
    assert by_patient["mean"][1] - by_patient["mean"][0] > 2 * (by_image["mean"][1] - by_image["mean"][0])
    point = roc_auc_score(labels[:, 0], scores[:, 0])
    assert by_patient[FINDINGS[0]][0] < point < by_patient[FINDINGS[0]][1]


def test_class_without_positives_gives_none_without_warnings():
    labels, scores, groups = _random_case(n_patients=30, per_patient=2, seed=4)
    hernia = FINDINGS.index("Hernia")
    labels[:, hernia] = 0
    labels[:, 0] = 0
    labels[0, 0] = 1  # Atelectasis: one positive image -> most resamples lack it; skipped, not crashed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ci = C.bootstrap_auroc_ci(labels, scores, groups, n_boot=100, seed=0)
        paired = C.paired_bootstrap_difference(labels, scores, scores * 2, groups, n_boot=50, seed=0)
        ap = C.average_precision(labels, scores)
        thresholds = choose_thresholds(labels, scores)
        tm = C.threshold_metrics(labels, scores, thresholds)
    assert ci["Hernia"] is None
    assert paired["Hernia"] == {"delta": None, "ci": None, "p_value": None, "auroc_a": None, "auroc_b": None,
                                "n_resamples": 0}
    assert ap["Hernia"] is None
    assert thresholds["Hernia"] is None
    assert all(v is None for v in tm["Hernia"].values())
    lo, hi = ci["Atelectasis"]
    assert 0 <= lo <= hi <= 1
    assert ci["mean"] is not None and ci["Cardiomegaly"] is not None


def test_all_classes_undefined_is_none_everywhere():
    labels = np.zeros((10, K), dtype=np.int8)
    scores = np.random.default_rng(0).random((10, K))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ci = C.bootstrap_auroc_ci(labels, scores, np.arange(10) // 2, n_boot=20)
    assert all(v is None for v in ci.values())


def test_bootstrap_rejects_bad_input():
    labels, scores, groups = _random_case()
    with pytest.raises(ValueError):
        C.bootstrap_auroc_ci(labels[:, :13], scores[:, :13], groups)
    with pytest.raises(ValueError):
        C.bootstrap_auroc_ci(labels, scores, groups[:-1])
    bad = scores.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        C.bootstrap_auroc_ci(labels, bad, groups)


# ------------------------------------------------------------------------------------------- paired

def test_paired_identical_models_have_zero_delta_and_p_one():
    labels, scores, groups = _random_case(seed=5)
    result = C.paired_bootstrap_difference(labels, scores, scores.copy(), groups, n_boot=200, seed=0)
    for key in list(FINDINGS) + ["mean"]:
        assert result[key]["delta"] == 0
        assert result[key]["ci"] == [0, 0]
        assert result[key]["p_value"] == pytest.approx(1.0)


def test_paired_clearly_better_model_has_positive_delta_and_small_p():
    rng = np.random.default_rng(6)
    labels, _, groups = _random_case(n_patients=80, per_patient=2, seed=6)
    good = labels * 2.5 + rng.normal(size=labels.shape)
    weak = labels * 0.3 + rng.normal(size=labels.shape)
    result = C.paired_bootstrap_difference(labels, good, weak, groups, n_boot=300, seed=0)
    assert result["mean"]["delta"] > 0.2
    assert result["mean"]["ci"][0] > 0
    assert result["mean"]["p_value"] < 0.01
    for f in FINDINGS:
        assert result[f]["delta"] > 0 and result[f]["p_value"] < 0.05
    assert result["mean"]["delta"] == pytest.approx(result["mean"]["auroc_a"] - result["mean"]["auroc_b"])
    # swapping the models flips the sign
    swapped = C.paired_bootstrap_difference(labels, weak, good, groups, n_boot=300, seed=0)
    assert swapped["mean"]["delta"] == pytest.approx(-result["mean"]["delta"])


def test_bootstrap_of_realistic_size_runs_in_seconds():
    import time

    rng = np.random.default_rng(7)
    n = 25_000
    groups = rng.integers(0, 4000, n)
    labels = (rng.random((n, K)) < 0.05).astype(np.int8)
    scores = labels * 0.5 + rng.random((n, K))
    start = time.perf_counter()
    C.bootstrap_auroc_ci(labels, scores, groups, n_boot=1000, seed=0)
    assert time.perf_counter() - start < 15  # about 0.5 s unloaded


# --------------------------------------------------------------------------------------- thresholds

def test_youden_on_separable_case_picks_threshold_between_the_classes():
    negatives, positives = [0.1, 0.2, 0.3], [0.6, 0.7, 0.9]
    labels = _tile([0, 0, 0, 1, 1, 1])
    scores = _tile(negatives + positives)
    for rule in ("youden", "f1"):
        thresholds = choose_thresholds(labels, scores, rule=rule)
        for f in FINDINGS:
            assert 0.3 < thresholds[f] < 0.6
            assert thresholds[f] == pytest.approx(0.45)
    with pytest.raises(ValueError):
        choose_thresholds(labels, scores, rule="accuracy")


def test_youden_and_f1_differ_where_they_should():
    # positives 0.4 and 0.9; 100 negatives in [0, 0.29] and 3 between the positives.
    # >= 0.4: sensitivity 1, FPR 3/103 -> J 0.97, F1 4/7 = 0.571; >= 0.9: J 0.5, F1 2/3.
    neg = list(np.linspace(0, 0.29, 100)) + [0.5, 0.6, 0.7]
    labels = _tile([0] * len(neg) + [1, 1])
    scores = _tile(neg + [0.4, 0.9])
    assert choose_thresholds(labels, scores, "youden")["Mass"] == pytest.approx((0.29 + 0.4) / 2)
    assert choose_thresholds(labels, scores, "f1")["Mass"] == pytest.approx((0.7 + 0.9) / 2)
    labels2 = _tile([0, 0, 1, 0, 1, 1])
    scores2 = _tile([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    # Youden: >= 0.3 -> TPR 1, FPR 1/3 (J 2/3); >= 0.5 -> TPR 2/3, FPR 0 (J 2/3): the tie goes to the lower one
    assert choose_thresholds(labels2, scores2, "youden")["Mass"] == pytest.approx(0.25)


def test_threshold_metrics_on_known_counts():
    # scores >= 0.5 predicted positive: TP 3, FN 1, FP 2, TN 4
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.5, 0.2, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1]
    result = C.threshold_metrics(_tile(y), _tile(s), {f: 0.5 for f in FINDINGS})
    m = result["Edema"]
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 2, 4)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert m["threshold"] == 0.5
    # nothing predicted positive: precision undefined, F1 0; missing threshold -> all None
    high = C.threshold_metrics(_tile(y), _tile(s), {"Edema": 2.0})
    assert high["Edema"]["precision"] is None and high["Edema"]["f1"] == 0 and high["Edema"]["sensitivity"] == 0
    assert high["Mass"]["sensitivity"] is None


def test_thresholds_document_round_trip():
    import json

    thresholds = {f: 0.1 * (i % 9) for i, f in enumerate(FINDINGS)}
    thresholds["Hernia"] = None
    doc = thresholds_document(thresholds, model="small_cnn", split_hash="abc123", rule="youden", version=2)
    doc = json.loads(json.dumps(doc))
    assert doc["version"] == 2 and doc["model"] == "small_cnn" and doc["split_hash"] == "abc123"
    assert doc["label_order"] == list(FINDINGS) and doc["columns"][12] == "pleural_thickening"
    assert doc["chosen_on"] == "validation" and doc["created"].endswith("+00:00")
    assert thresholds_from_document(doc) == thresholds
    with pytest.raises(ValueError):
        thresholds_document({"Infiltrate": 0.5}, model="m", split_hash="h", rule="youden")
    with pytest.raises(ValueError):
        thresholds_from_document({**doc, "label_order": list(reversed(FINDINGS))})


# ------------------------------------------------------------------------------- AP, subgroups, summary

def test_average_precision_hand_computed():
    # ranked: 0.9 (pos), 0.8 (neg), 0.7 (pos) -> AP = 1/2 * (1 + 2/3)
    result = C.average_precision(_tile([1, 0, 1, 0]), _tile([0.9, 0.8, 0.7, 0.1]))
    assert result["Nodule"] == pytest.approx((1 + 2 / 3) / 2)


def test_subgroup_auroc_view_positions():
    labels = _tile([0, 1, 0, 1, 0, 1, 1])
    scores = _tile([0.1, 0.9, 0.2, 0.8, 0.7, 0.3, 0.5])
    view = np.array(["PA", "PA", "PA", "PA", "AP", "AP", "AP"])
    result = C.subgroup_auroc(labels, scores, {"PA": view == "PA", "AP": view == "AP", "none": np.zeros(7, bool)})
    assert result["PA"]["n"] == 4 and result["PA"]["auroc"]["Mass"] == pytest.approx(1.0)
    assert result["AP"]["n"] == 3 and result["AP"]["auroc"]["Mass"] == pytest.approx(0.0)  # 0.7 (neg) > 0.3, 0.5
    assert result["PA"]["mean_auroc"] == pytest.approx(1.0)
    assert result["AP"]["positives"]["Mass"] == 2
    assert result["none"]["n"] == 0 and result["none"]["mean_auroc"] is None


def test_summarize_model_layout():
    labels, scores, groups = _random_case(n_patients=30, per_patient=2, seed=8)
    view = np.where(np.arange(len(groups)) % 3 == 0, "AP", "PA")
    summary = C.summarize_model(labels, scores, groups, labels_val=labels, scores_val=scores, view_position=view,
                                n_boot=50)
    assert summary["n_images"] == 60 and summary["n_patients"] == 30
    assert set(summary["view_position"]) == {"AP", "PA"}
    assert summary["threshold_rule"] == "youden" and set(summary["thresholds"]) == set(FINDINGS)
    assert summary["auroc_ci"]["mean"][0] <= summary["mean_auroc"] <= summary["auroc_ci"]["mean"][1]
    assert not math.isnan(summary["average_precision"]["Mass"])


def test_mean_auroc_ci_is_always_over_the_same_classes():
    """A class defined on all rows but missing from a resample makes that resample skip the mean (never a
    13-class mean beside 14-class ones); the number used is reported."""
    labels, scores, groups = _random_case(n_patients=30, per_patient=2, seed=4)
    labels[:, 0] = 0
    labels[0, 0] = 1  # Atelectasis: one positive patient, absent from ~37% of the resamples
    boot = C.bootstrap_aurocs(labels, [scores], groups, n_boot=200, seed=0)[0]
    complete = ~np.isnan(boot).any(axis=1)
    assert 0 < complete.sum() < 200
    summary = C.summarize_model(labels, scores, groups, n_boot=200)
    assert summary["auroc_ci_resamples"] == {"used": int(complete.sum()), "of": 200, "classes": 14}
    means = boot[complete].mean(axis=1)
    assert summary["auroc_ci"]["mean"] == pytest.approx(list(np.percentile(means, [2.5, 97.5])))
    # the paired mean difference uses the same rule
    paired = C.paired_bootstrap_difference(labels, scores, scores + 0.1 * labels, groups, n_boot=200, seed=0)
    assert paired["mean"]["n_resamples"] == int(complete.sum())


def test_average_precision_ci_resamples_match_sklearn_with_weights():
    from sklearn.metrics import average_precision_score

    labels, scores, groups = _random_case(n_patients=25, per_patient=2, seed=9)
    scores = np.round(scores, 1)  # ties
    weights = C.bootstrap_image_weights(groups, n_boot=5, seed=3)
    for c in (0, 5):
        ours = C._weighted_average_precision(labels[:, c], scores[:, c], weights.astype(float))
        theirs = [average_precision_score(labels[:, c], scores[:, c], sample_weight=w) for w in weights]
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    labels[:, 13] = 0
    ci, resamples = C.bootstrap_average_precision_ci(labels, scores, groups, n_boot=100, seed=0)
    point = C.average_precision(labels, scores)
    assert ci["Hernia"] is None and resamples["classes"] == 13
    assert ci["Mass"][0] <= point["Mass"] <= ci["Mass"][1] and ci["mean"] is not None
    summary = C.summarize_model(labels, scores, groups, n_boot=100)
    assert summary["average_precision_ci"] == ci and summary["average_precision_ci_resamples"] == resamples


def test_auroc_by_follow_up_bucket():
    labels, scores, groups = _random_case(n_patients=40, per_patient=3, seed=2)
    follow_up = np.tile([0, 2, 15], 40).astype(float)
    follow_up[:3] = np.nan
    summary = C.summarize_model(labels, scores, groups, follow_up=follow_up, n_boot=20)
    buckets = summary["follow_up"]
    assert list(buckets) == ["0", "1-3", "10+", "missing"]  # 4-9 is empty: left out
    assert [buckets[b]["n"] for b in buckets] == [39, 39, 39, 3]
