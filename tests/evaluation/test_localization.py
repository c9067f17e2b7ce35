"""Localization: IoBB / IoU on known boxes and Wang et al. 2017 accuracy on hand-built cases."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from thorax_ray.evaluation import localization as L
from thorax_ray.labels import BOXED_FINDINGS


def test_iobb_and_iou_on_known_boxes():
    pred, truth = (0, 0, 10, 10), (5, 0, 10, 10)
    assert L.iobb(pred, truth) == pytest.approx(0.5)  # 50 / 100
    assert L.iou(pred, truth) == pytest.approx(1 / 3)  # 50 / 150
    # a small box inside a large one: IoBB 1 (all of the prediction is on the truth), IoU 0.04
    assert L.iobb((2, 2, 2, 2), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert L.iou((2, 2, 2, 2), (0, 0, 10, 10)) == pytest.approx(0.04)
    # the whole image over a small truth box: IoBB = truth area / image area
    assert L.iobb((0, 0, 100, 100), (10, 10, 10, 20)) == pytest.approx(0.02)
    # disjoint, touching and degenerate boxes
    assert L.iobb((0, 0, 5, 5), (20, 20, 5, 5)) == 0
    assert L.iou((0, 0, 5, 5), (5, 0, 5, 5)) == 0
    assert L.iobb((3, 3, 0, 0), (0, 0, 10, 10)) == 0


def test_vectorised_overlaps_broadcast():
    preds = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [100, 100, 1, 1]])
    truths = np.array([[5, 0, 10, 10], [0, 0, 20, 20]])
    matrix = L.iobb_array(preds[:, None, :], truths[None, :, :])
    assert matrix.shape == (3, 2)
    expected = [[L.iobb(p, t) for t in truths] for p in preds]
    np.testing.assert_allclose(matrix, expected)
    np.testing.assert_allclose(matrix[:2], [[0.5, 1.0], [1.0, 1.0]])  # (5,0,10,10) lies inside (0,0,20,20)
    np.testing.assert_allclose(L.iou_array(preds[:, None, :], truths[None, :, :])[0], [1 / 3, 0.25])


def _truth():
    return pd.DataFrame([
        # image a: one Mass box and one Nodule box; image b: one Mass box; image c: one Cardiomegaly box
        {"image_index": "a.png", "finding": "Mass", "x": 0, "y": 0, "w": 10, "h": 10},
        {"image_index": "a.png", "finding": "Nodule", "x": 50, "y": 50, "w": 4, "h": 4},
        {"image_index": "b.png", "finding": "Mass", "x": 20, "y": 20, "w": 10, "h": 10},
        {"image_index": "c.png", "finding": "Cardiomegaly", "x": 30, "y": 30, "w": 40, "h": 20},
        {"image_index": "d.png", "finding": "Infiltrate", "x": 0, "y": 0, "w": 10, "h": 10},
    ])


def _box(finding, x, y, w, h, score=0.9):
    return {"finding": finding, "x": x, "y": y, "w": w, "h": h, "score": score}


def test_localization_accuracy_hand_built_case():
    predicted = {
        # a: Mass hit (IoBB 0.5, IoU 1/3) plus one Mass box far away (a false positive); a Nodule box
        #    that covers the nodule and much more (IoBB 16/100, IoU 16/100)
        "a.png": [_box("Mass", 5, 0, 10, 10), _box("Mass", 80, 80, 5, 5), _box("nodule", 48, 48, 10, 10)],
        # b: Mass miss (prediction on the wrong side); an Effusion box on an image without Effusion truth: ignored
        "b.png": [_box("Mass", 0, 0, 5, 5), _box("Effusion", 0, 0, 5, 5)],
        # c: Cardiomegaly box inside the truth (IoBB 1, IoU 0.25)
        "c.png": [_box("Cardiomegaly", 40, 30, 20, 10)],
        # d: nothing predicted -> the Infiltration box (spelled Infiltrate in the truth) is a miss
    }
    result = L.localization_accuracy(predicted, _truth())
    assert set(result) == set(BOXED_FINDINGS)

    mass = result["Mass"]
    assert mass["n"] == 2 and mass["n_images"] == 2
    assert mass["iobb"] == {"0.1": 0.5, "0.25": 0.5, "0.5": 0.0, "0.75": 0.0, "0.9": 0.0}  # 0.5 is not > 0.5
    assert mass["iou"] == {"0.1": 0.5, "0.3": 0.5, "0.5": 0.0}
    # false positives at IoBB > 0.1: image a has 1 (the far box), image b has 1 (the miss) -> 2 / 2 pairs;
    # at IoBB > 0.5 the hit no longer counts either: a has 2, b has 1 -> 1.5
    assert mass["avg_false_positives"]["iobb"]["0.1"] == pytest.approx(1.0)
    assert mass["avg_false_positives"]["iobb"]["0.5"] == pytest.approx(1.5)
    assert mass["avg_predicted_boxes"] == pytest.approx(1.5)

    nodule = result["Nodule"]
    assert nodule["iobb"]["0.1"] == 1.0 and nodule["iobb"]["0.25"] == 0.0
    assert nodule["iou"]["0.1"] == 1.0 and nodule["iou"]["0.3"] == 0.0

    cardio = result["Cardiomegaly"]
    assert all(v == 1.0 for v in cardio["iobb"].values())
    assert cardio["iou"] == {"0.1": 1.0, "0.3": 0.0, "0.5": 0.0}
    assert cardio["avg_false_positives"]["iobb"]["0.9"] == 0.0

    infiltration = result["Infiltration"]
    assert infiltration["n"] == 1 and infiltration["iobb"]["0.1"] == 0.0
    assert infiltration["avg_false_positives"]["iobb"]["0.1"] == 0.0

    effusion = result["Effusion"]  # no truth boxes: undefined, not 0
    assert effusion["n"] == 0 and effusion["iobb"]["0.1"] is None and effusion["avg_predicted_boxes"] is None
    json.dumps(result)  # JSON-ready

    # restricting to predicted images drops image d's truth box
    restricted = L.localization_accuracy(predicted, _truth(), only_predicted_images=True)
    assert restricted["Infiltration"]["n"] == 0 and restricted["Mass"]["n"] == 2


def test_localization_counts_each_truth_box_separately():
    truth = pd.DataFrame([
        {"image_index": "x.png", "finding": "Nodule", "x": 0, "y": 0, "w": 10, "h": 10},
        {"image_index": "x.png", "finding": "Nodule", "x": 50, "y": 50, "w": 10, "h": 10},
    ])
    predicted = {"x.png": [_box("Nodule", 0, 0, 10, 10)]}
    result = L.localization_accuracy(predicted, truth)["Nodule"]
    assert result["n"] == 2 and result["n_images"] == 1
    assert result["iobb"]["0.9"] == 0.5  # one of two boxes found
    assert result["avg_false_positives"]["iobb"]["0.9"] == 0.0  # the prediction overlaps a truth box


def test_unknown_finding_is_an_error():
    with pytest.raises(ValueError, match="unknown finding"):
        L.localization_accuracy({"a.png": [_box("Tumour", 0, 0, 1, 1)]}, _truth())


def test_chance_baselines():
    truth = pd.DataFrame([
        {"image_index": "a.png", "finding": "Cardiomegaly", "x": 300, "y": 400, "w": 500, "h": 300},
        {"image_index": "b.png", "finding": "Cardiomegaly", "x": 320, "y": 420, "w": 480, "h": 280},
        {"image_index": "c.png", "finding": "Cardiomegaly", "x": 310, "y": 410, "w": 520, "h": 320},
        {"image_index": "a.png", "finding": "Nodule", "x": 100, "y": 100, "w": 30, "h": 30},
        {"image_index": "b.png", "finding": "Nodule", "x": 800, "y": 800, "w": 30, "h": 30},
    ])
    chance = L.chance_localization(truth, 1024, 1024)
    whole = chance["whole_image"]
    # whole image: IoBB = 500*300 / 1024^2 = 0.143 -> hits at 0.1 only; a nodule is ~0.0009 of the image
    assert whole["Cardiomegaly"]["iobb"]["0.1"] == 1.0 and whole["Cardiomegaly"]["iobb"]["0.25"] == 0.0
    assert whole["Nodule"]["iobb"]["0.1"] == 0.0
    median = chance["median_box"]
    # median box of Cardiomegaly (310, 410, 500, 300) overlaps each truth box heavily
    assert median["Cardiomegaly"]["iobb"]["0.75"] == 1.0
    # median nodule position ((100+800)/2 = 450) is on neither nodule
    assert median["Nodule"]["iobb"]["0.1"] == 0.0
    assert L.mean_accuracy(whole)["0.1"] == pytest.approx(0.5)  # Cardiomegaly 1, Nodule 0; others have no boxes


def test_localization_ci_is_the_patient_bootstrap_of_the_accuracy():
    """Per resample: localized boxes / boxes over the drawn patients' images (the resamples of the AUROC CIs)."""
    from thorax_ray.evaluation import classification as C

    rng = np.random.default_rng(0)
    rows, predicted, patients = [], {}, {}
    for k in range(40):
        image = f"{k:03d}.png"
        patients[image] = f"p{k // 2}"  # two images per patient
        for finding in ("Mass", "Effusion"):
            rows.append({"image_index": image, "finding": finding, "x": 0, "y": 0, "w": 10, "h": 10})
            hit = finding == "Effusion" or rng.random() < 0.5
            predicted.setdefault(image, []).append(_box(finding, 0 if hit else 50, 0, 10, 10))
    truth = pd.DataFrame(rows)
    hits = L.truth_box_hits(predicted, truth)
    assert len(hits) == 80 and hits.loc[hits["finding"] == "Effusion", "0.5"].all()
    ci = L.localization_ci(predicted, truth, patients, n_boot=300, seed=1)
    mass = hits[hits["finding"] == "Mass"]
    weights = C.bootstrap_image_weights(mass["image_index"].map(patients).to_numpy(), n_boot=300, seed=1)
    brute = (weights * mass["0.5"].to_numpy()).sum(1) / weights.sum(1)
    assert ci["Mass"]["0.5"] == pytest.approx(list(np.percentile(brute, [2.5, 97.5])))
    point = L.localization_accuracy(predicted, truth)["Mass"]["iobb"]["0.5"]
    assert ci["Mass"]["0.5"][0] < point < ci["Mass"]["0.5"][1]
    assert ci["Effusion"]["0.5"] == [1.0, 1.0] and ci["Nodule"]["0.5"] is None  # no Nodule boxes
    assert ci["resamples"] == {"used": 300, "of": 300, "classes": 2}
    assert ci["mean"]["0.5"] == pytest.approx(list(np.percentile((brute + 1) / 2, [2.5, 97.5])))
