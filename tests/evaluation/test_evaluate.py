"""evaluate_scores end to end on a synthetic dataset with made-up scores whose quality is known."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from thorax_ray.attribution import encode_heatmaps
from thorax_ray.calibration import apply_calibration, describe_calibration, ece_per_finding, fit_calibration
from thorax_ray.data.manifest import build_manifest
from thorax_ray.data.nih_csv import read_bbox_list
from thorax_ray.evaluation.evaluate import EvaluationConfig, evaluate_scores
from thorax_ray.evaluation.reliability import NO_COLUMNS
from thorax_ray.labels import FINDING_COLUMNS, FINDINGS
from thorax_ray.scoring.output import CALIBRATED_COLUMNS
from thorax_ray.thresholds import stabilised_thresholds


def fake_scores(manifest, boxes, *, noise, seed, with_maps):
    rng = np.random.default_rng(seed)
    labels = manifest[list(FINDING_COLUMNS)].to_numpy(dtype=float)
    frame = pd.DataFrame({"image_index": manifest["image_index"], "width": 64, "height": 64})
    probabilities = np.clip(labels * 0.6 + 0.2 + rng.normal(0, noise, labels.shape), 0, 1)
    for i, column in enumerate(FINDING_COLUMNS):
        frame[column] = probabilities[:, i]
    if with_maps:  # each truth box region lit up in its finding's 8x8 map (64 px images: 8 px per cell)
        maps = np.zeros((len(frame), 14, 8, 8), dtype=np.uint8)
        position = {name: i for i, name in enumerate(frame["image_index"])}
        for box in boxes.itertuples():
            x0, y0 = int(box.x // 8), int(box.y // 8)
            x1, y1 = int(np.ceil((box.x + box.w) / 8)), int(np.ceil((box.y + box.h) / 8))
            maps[position[box.image_index], FINDINGS.index(box.finding), y0:y1, x0:x1] = 255
        frame["heatmap"] = encode_heatmaps(maps)
        # Boxes that are all wrong: localization must come from the heatmaps (Wang's protocol), not from these.
        frame["boxes"] = [[{"finding": f, "x": 0, "y": 0, "w": 1, "h": 1, "score": 0.9} for f in FINDINGS]
                          for _ in range(len(frame))]
    return frame


def test_two_models_compared_with_report(synthetic_small, tmp_path):
    manifest, _ = build_manifest(str(synthetic_small))
    boxes = read_bbox_list(str(synthetic_small / "BBox_List_2017.csv"))
    scores = {"good": fake_scores(manifest, boxes, noise=0.1, seed=1, with_maps=True),
              "weak": fake_scores(manifest, boxes, noise=0.6, seed=2, with_maps=False)}
    config = EvaluationConfig(scores=(("good", "good-uri"), ("weak", "weak-uri")), data=str(synthetic_small),
                              out=str(tmp_path), n_boot=200, overlays=2)
    add_calibrated_columns(scores["good"], metrics_rows(config, manifest, "val"))  # "weak": scored before them
    metrics = evaluate_scores(config, lambda uri: scores[uri.split("-")[0]])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["split_hash"] and set(saved["models"]) == {"good", "weak"}
    assert saved["data_split"]["kind"] == "official"  # the synthetic dataset has NIH's lists
    assert "split kind: official split" in (tmp_path / "report.html").read_text()
    good, weak = saved["models"]["good"], saved["models"]["weak"]
    assert good["mean_auroc"] > weak["mean_auroc"] and good["mean_auroc"] > 0.9
    assert all(lo <= hi for lo, hi in (v for v in good["auroc_ci"].values() if v is not None))
    boxed = {f for f, r in saved["localization"]["good"].items() if r["n"]}
    assert boxed and all(saved["localization"]["good"][f]["iobb"]["0.1"] == 1.0 for f in boxed)
    chance = saved["chance_localization"]["whole_image"]
    assert np.mean([saved["localization"]["good"][f]["iobb"]["0.25"] for f in boxed]) > \
        np.mean([chance[f]["iobb"]["0.25"] for f in boxed]) + 0.3
    assert "weak" not in saved["localization"]
    # beside Wang's protocol, the boxes as scored (all wrong here), each with patient-bootstrap CIs
    protocols = good["localization_protocols"]
    assert protocols["wang2017"]["result"] == saved["localization"]["good"]
    assert "thresholds 60 and 180 of 255, every region" in protocols["wang2017"]["label"]
    assert all(protocols["scored_boxes"]["result"][f]["iobb"]["0.1"] == 0.0 for f in boxed)
    assert all(protocols[k]["ci"]["resamples"]["of"] == 200 for k in protocols)
    assert set(good["follow_up"]) >= {"0"} and good["init"] == "init unknown"
    assert good["average_precision_ci"]["mean"] and good["auroc_ci_resamples"]["of"] == 200
    assert saved["paired"][0]["result"]["mean"]["delta"] > 0
    # patients, not images, are the bootstrap unit; thresholds are chosen on the validation rows only
    test_rows = metrics_rows(config, manifest, "test")
    assert good["n_images"] == len(test_rows)
    assert good["n_patients"] == test_rows["patient_id"].nunique() < good["n_images"]
    val_rows = metrics_rows(config, manifest, "val")
    val_scores = scores["good"].set_index("image_index").loc[val_rows["image_index"], list(FINDING_COLUMNS)]
    expected, support = stabilised_thresholds(val_rows[list(FINDING_COLUMNS)].to_numpy(float),
                                              val_scores.to_numpy(float))
    assert good["threshold_support"] == support and any(s["bootstrapped"] for s in support.values())
    document = json.loads((tmp_path / "thresholds" / "good.v1.json").read_text())
    assert document["thresholds"] == pytest.approx(expected) and good["thresholds"] == pytest.approx(expected)
    applied = [m for m in good["threshold_metrics"].values() if m["tp"] is not None]
    assert applied and all(m["tp"] + m["fp"] + m["tn"] + m["fn"] == len(test_rows) for m in applied)
    assert len(pd.read_parquet(tmp_path / "predictions.parquet")) == len(manifest)
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 3 and "synthetic" in html
    assert len(os.listdir(tmp_path / "overlays")) == 2
    assert "good" in metrics["table"] and "Wang 2017" in metrics["table"]
    # calibration error before and after: the calibrated columns where the scores have them, a note where not
    calibration = good["calibration"]
    assert calibration["available"] and calibration["applied"] and calibration["method"] == "platt"
    assert set(calibration["ece_raw"]) == set(calibration["ece_calibrated"]) == set(FINDINGS)
    test_labels = test_rows[list(FINDING_COLUMNS)].to_numpy(int)
    test_scores = scores["good"].set_index("image_index").loc[test_rows["image_index"]]
    assert calibration["ece_raw"] == ece_per_finding(test_labels, test_scores[list(FINDING_COLUMNS)].to_numpy(float))
    assert calibration["ece_calibrated"] == ece_per_finding(test_labels,
                                                            test_scores[list(CALIBRATED_COLUMNS)].to_numpy(float))
    weak = saved["models"]["weak"]["calibration"]
    assert not weak["available"] and weak["ece_calibrated"] is None and weak["mean_ece_raw"] > 0
    assert weak["note"] == NO_COLUMNS and f"weak: {NO_COLUMNS}" in saved["notes"]
    assert (tmp_path / "reliability_good.png").stat().st_size > 0 and (tmp_path / "reliability_weak.png").exists()
    assert html.count("data:image/png;base64") >= 5


def add_calibrated_columns(frame, val_rows):
    """The calibrated columns a scoring run writes, from a calibration fitted on the validation rows (as training
    fits it), and the description its commit record carries."""
    val = frame.set_index("image_index").loc[val_rows["image_index"], list(FINDING_COLUMNS)]
    calibration = fit_calibration(val_rows[list(FINDING_COLUMNS)].to_numpy(int), val.to_numpy(float))
    calibrated = apply_calibration(calibration, frame[list(FINDING_COLUMNS)].to_numpy(float))
    for i, column in enumerate(CALIBRATED_COLUMNS):
        frame[column] = calibrated[:, i]
    frame.attrs["calibration"] = describe_calibration(calibration)


def metrics_rows(config, manifest, split):
    """The manifest rows of `split` as the evaluation assigns them (its own split of the dataset)."""
    from thorax_ray.data.sources import DataConfig, open_source

    source = open_source(DataConfig(data=config.data))
    return source.manifest[source.manifest["split"] == split]


def test_thresholds_file_versioned_only_when_thresholds_change(tmp_path):
    from thorax_ray.evaluation.evaluate import write_thresholds

    folder = str(tmp_path / "thresholds")
    first = write_thresholds(folder, "cnn", {"Mass": 0.3}, split_hash="abc", rule="youden")
    same = write_thresholds(folder, "cnn", {"Mass": 0.3}, split_hash="abc", rule="youden")
    changed = write_thresholds(folder, "cnn", {"Mass": 0.4}, split_hash="abc", rule="youden")
    other_rule = write_thresholds(folder, "cnn", {"Mass": 0.4}, split_hash="abc", rule="f1")
    assert [os.path.basename(p) for p in (first, same, changed, other_rule)] == \
        ["cnn.v1.json", "cnn.v1.json", "cnn.v2.json", "cnn.v3.json"]
    with open(changed) as handle:
        document = json.load(handle)
    assert document["version"] == 2 and document["thresholds"]["Mass"] == 0.4
    assert write_thresholds(folder, "mlp", {"Mass": 0.4}, split_hash="abc", rule="youden").endswith("mlp.v1.json")


def test_scores_of_two_models_in_one_output_evaluate_only_the_newest():
    from thorax_ray.evaluation.evaluate import newest_model_rows

    scores = pd.DataFrame({"image_index": ["a.png", "b.png", "c.png", "a.png"],
                           "model_id": ["old", "old", "old", "new"],
                           "scored_at": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-01-01", "2024-02-01"])})
    kept, note = newest_model_rows(scores, "out/scores")
    assert kept["image_index"].tolist() == ["a.png"] and "model_id new" in note and "1 of 4 rows" in note
    same, none = newest_model_rows(scores[scores["model_id"] == "old"], "out/scores")
    assert len(same) == 3 and none is None


def test_scores_of_a_model_trained_on_another_split_are_flagged(synthetic_small, tmp_path):
    manifest, _ = build_manifest(str(synthetic_small))
    boxes = read_bbox_list(str(synthetic_small / "BBox_List_2017.csv"))
    scores = fake_scores(manifest, boxes, noise=0.1, seed=1, with_maps=False)
    scores.attrs["split_hash"] = "not-this-split"
    config = EvaluationConfig(scores=(("cnn", "cnn-uri"),), data=str(synthetic_small), out=str(tmp_path), n_boot=20,
                              overlays=0)
    metrics = evaluate_scores(config, lambda uri: scores)
    assert any("trained on split not-this-split" in note for note in metrics["notes"])
    scores.attrs["split_hash"] = metrics["split_hash"]  # the same split: no warning
    again = evaluate_scores(config, lambda uri: scores)
    assert not any("trained on split" in note for note in again["notes"])


def test_scores_of_a_synthetic_model_on_real_images_are_flagged_in_the_report_header(synthetic_small, tmp_path):
    from thorax_ray.data.origin import ood_check

    manifest, _ = build_manifest(str(synthetic_small))
    scores = fake_scores(manifest, read_bbox_list(str(synthetic_small / "BBox_List_2017.csv")), noise=0.1, seed=1,
                         with_maps=False)
    scores.attrs["data_origin"] = ood_check("synthetic", "real")
    config = EvaluationConfig(scores=(("cnn", "cnn-uri"),), data=str(synthetic_small), out=str(tmp_path), n_boot=20,
                              overlays=0)
    metrics = evaluate_scores(config, lambda uri: scores)
    assert any(note.startswith("cnn: out of distribution: this model was trained on synthetic images")
               for note in metrics["notes"])
    header = open(metrics["report"]).read().split("<h2>", 1)[0]
    assert "out of distribution" in header
    scores.attrs["data_origin"] = ood_check("synthetic", "synthetic")
    assert not any("out of distribution" in n for n in evaluate_scores(config, lambda uri: scores)["notes"])


def test_an_empty_or_missing_scores_output_is_an_error_and_nothing_is_written(synthetic_small, tmp_path):
    """Before: exit 0 and a full report with every AUROC n/a; beside a good model, the good one was zeroed."""
    from thorax_ray.evaluation.evaluate import EvaluationError
    from thorax_ray.scoring import read_scores

    manifest, _ = build_manifest(str(synthetic_small))
    boxes = read_bbox_list(str(synthetic_small / "BBox_List_2017.csv"))
    good = fake_scores(manifest, boxes, noise=0.1, seed=1, with_maps=False)
    load = {"good-uri": lambda: good, str(tmp_path / "typo"): lambda: read_scores(str(tmp_path / "typo"))}
    config = EvaluationConfig(scores=(("good", "good-uri"), ("cnn", str(tmp_path / "typo"))),
                              data=str(synthetic_small), out=str(tmp_path / "eval"), n_boot=20, overlays=0)
    with pytest.raises(EvaluationError, match=r"--scores cnn=.*typo: no committed scores there"):
        evaluate_scores(config, lambda uri: load[uri]())
    other = good.assign(image_index="other_" + good["image_index"])  # scores of another dataset
    config = EvaluationConfig(scores=(("good", "good-uri"), ("other", "other-uri")), data=str(synthetic_small),
                              out=str(tmp_path / "eval"), n_boot=20, overlays=0)
    with pytest.raises(EvaluationError, match=r"--scores other=other-uri: none of its 120 scored images is in"):
        evaluate_scores(config, lambda uri: {"good-uri": good, "other-uri": other}[uri])
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("name", ["../up", "/abs", "a/b", "..", "m:1", ""])
def test_model_names_that_would_leave_the_output_folder_are_rejected(name, tmp_path):
    """Before: `--scores ../x=URI` wrote its thresholds file outside --out."""
    with pytest.raises(ValueError, match="model name .* is not a plain file name"):
        EvaluationConfig(scores=((name, "uri"),), data="d", out=str(tmp_path))
    with pytest.raises(ValueError, match="must be distinct"):
        EvaluationConfig(scores=(("a", "u1"), ("a", "u2")), data="d", out=str(tmp_path))


def test_heatmap_boxes_follow_wang_every_region_both_thresholds_and_skip_unknown_sizes():
    from thorax_ray.attribution import HEATMAP_SCHEMA_METADATA, decode_heatmaps
    from thorax_ray.evaluation.evaluate import heatmap_boxes

    maps = np.zeros((2, 14, 8, 8), dtype=np.uint8)
    mass = FINDINGS.index("Mass")
    maps[:, mass, 0:2, 0:2] = 255  # three separate regions, the third only above 60
    maps[:, mass, 4:6, 0:2] = 255
    maps[:, mass, 0:2, 5:7] = 120
    scores = pd.DataFrame({"image_index": ["a.png", "b.png"], "width": [64, None], "height": [64, None],
                           "heatmap": encode_heatmaps(maps)}).set_index("image_index")
    truth = pd.DataFrame([{"image_index": i, "finding": "Mass", "x": 0, "y": 0, "w": 16, "h": 16}
                          for i in ("a.png", "b.png")])
    boxes, unknown = heatmap_boxes(scores, truth, HEATMAP_SCHEMA_METADATA(8, 8, "cam"))
    assert unknown == 1 and list(boxes) == ["a.png"]  # b's original size is unknown: no boxes, counted
    # threshold 60: all three regions; threshold 180: the two bright ones (not only the 2 largest overall)
    assert len(boxes["a.png"]) == 5
    assert np.allclose(decode_heatmaps(scores["heatmap"], (8, 8))[0, mass], maps[0, mass], atol=5)


def test_an_evaluation_on_a_random_split_sits_beside_one_on_the_official_split(synthetic_small, tmp_path):
    """--beside: the random-split run's columns in the official-split report and table, labelled with their own
    split and rows, never paired with this evaluation's models."""
    manifest, _ = build_manifest(str(synthetic_small))
    boxes = read_bbox_list(str(synthetic_small / "BBox_List_2017.csv"))
    scores = fake_scores(manifest, boxes, noise=0.2, seed=3, with_maps=True)
    random_out, official_out = tmp_path / "random", tmp_path / "official"
    evaluate_scores(EvaluationConfig(scores=(("cnn", "u"),), data=str(synthetic_small), out=str(random_out),
                                     n_boot=20, overlays=0, split_kind="random"), lambda uri: scores)
    metrics = evaluate_scores(EvaluationConfig(scores=(("cnn", "u"),), data=str(synthetic_small),
                                               out=str(official_out), n_boot=20, overlays=0,
                                               beside=(str(random_out),)), lambda uri: scores)
    beside = metrics["models"]["cnn@random"]
    assert beside["data_split"]["kind"] == "random" and metrics["data_split"]["kind"] == "official"
    random_metrics = json.loads((random_out / "metrics.json").read_text())
    assert beside["mean_auroc"] == random_metrics["models"]["cnn"]["mean_auroc"]
    assert beside["n_images"] == random_metrics["models"]["cnn"]["n_images"]
    assert "random patient split 70/10/20 (train/val/test), seed 0; evaluated separately, not paired" in beside["label"]
    assert beside["label"] in metrics["table"] and "split kind: official split" in metrics["table"]
    report = (official_out / "report.html").read_text()
    assert "evaluated separately, not paired" in report
    assert all("cnn@random" not in str(p) for p in metrics.get("paired", []))
    with pytest.raises(ValueError, match=r"--beside .*nowhere: no metrics.json with models there"):
        evaluate_scores(EvaluationConfig(scores=(("cnn", "u"),), data=str(synthetic_small), out=str(tmp_path / "x"),
                                         beside=(str(tmp_path / "nowhere"),)), lambda uri: scores)
    assert not (tmp_path / "x").exists()
