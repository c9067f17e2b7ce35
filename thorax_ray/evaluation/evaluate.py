"""`jobs/evaluate.py --scores ...`: compares scored models on the test split of a dataset and writes
metrics.json, thresholds, per-image predictions, plots, heatmap overlays and report.html (every file
through thorax_ray.storage: the output may be a local folder or an s3:// prefix)."""
from __future__ import annotations

import io
import itertools
import logging
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from thorax_ray import console, storage
from thorax_ray.attribution import (WANG_THRESHOLDS, boxes_for_image, centres_from_metadata, decode_heatmaps,
                                    upsample_maps)
from thorax_ray.data.inputs import InputSource
from thorax_ray.data.locate import discover
from thorax_ray.data.nih_csv import read_bbox_list
from thorax_ray.data.sources import DataConfig, open_source
from thorax_ray.data.splits import SplitConfig
from thorax_ray.evaluation.beside import beside_models, read_beside
from thorax_ray.evaluation.classification import paired_bootstrap_difference, summarize_model
from thorax_ray.evaluation.comparison import comparison_ci, comparison_table, format_comparison_table
from thorax_ray.evaluation.localization import (NIH_IMAGE_SIZE, chance_localization, localization_accuracy,
                                                localization_ci)
from thorax_ray.evaluation.plots import plot_auroc_comparison, plot_heatmap_overlay, plot_pr_curves, plot_roc_curves
from thorax_ray.evaluation.protocols import localization_protocols
from thorax_ray.evaluation.reliability import calibration_metrics, plot_reliability_diagrams, reliability_file
from thorax_ray.evaluation.report import write_report
from thorax_ray.evaluation.report_summary import Overlay
from thorax_ray.labels import FINDING_COLUMNS, FINDINGS, column_name
from thorax_ray.names import safe_name
from thorax_ray.scoring.output import CALIBRATED_COLUMNS
from thorax_ray.scoring.overlays import read_original
from thorax_ray.thresholds import write_thresholds

log = logging.getLogger(__name__)


class EvaluationError(ValueError):
    """Scores that cannot be evaluated (missing, empty, of another dataset); the message names them."""


@dataclass(frozen=True)
class EvaluationConfig:
    scores: tuple[tuple[str, str], ...]  # (model name, scores URI)
    data: str
    out: str
    split: str = "test"
    n_boot: int = 1000
    threshold_rule: str = "youden"
    overlays: int = 8
    dataset_kind: str = "synthetic"  # says where the numbers come from, in every column label
    s3_endpoint: str | None = None
    split_kind: str = "official"  # how a raw dataset's patients are split (a prepared output keeps prepare's)
    beside: tuple[str, ...] = ()  # output folders of other evaluations whose models are set beside (evaluation/beside.py)

    def __post_init__(self) -> None:
        """Model names become file and folder names (thresholds/<name>.vN.json) and column prefixes."""
        if not self.scores:
            raise EvaluationError("no scores to evaluate: give at least one --scores NAME=URI")
        names = [safe_name("model name", name, where=f"--scores {name}={uri}") for name, uri in self.scores]
        if len(set(names)) != len(names):
            raise EvaluationError(f"--scores names must be distinct: {names}")


def load_outputs(config: EvaluationConfig, load_scores) -> dict[str, pd.DataFrame]:
    """Every model's committed scores, read before anything is written; an output with no committed
    row (a mistyped path, a folder that is not a jobs/score.py output) is an error naming it, never a
    model with every AUROC n/a that also empties the rows every model shares."""
    loaded = {}
    for name, uri in config.scores:
        frame = load_scores(uri)
        if not len(frame):
            raise EvaluationError(f"--scores {name}={uri}: no committed scores there (no such output, or not "
                                  "an output of jobs/score.py, or no run of it has committed yet)")
        loaded[name] = frame
    return loaded


def _labels(frame: pd.DataFrame) -> np.ndarray:
    return frame[list(FINDING_COLUMNS)].to_numpy(dtype=np.float64)


def _scores(frame: pd.DataFrame, name: str) -> np.ndarray:
    return frame[[f"{name}:{c}" for c in FINDING_COLUMNS]].to_numpy(dtype=np.float64)


def _calibrated(frame: pd.DataFrame, name: str) -> np.ndarray | None:
    """The model's calibrated probabilities; None when its scores lack them on any of the rows (older runs)."""
    columns = [f"{name}:{c}" for c in CALIBRATED_COLUMNS]
    if not set(columns) <= set(frame.columns) or frame[columns].isna().to_numpy().any():
        return None
    return frame[columns].to_numpy(dtype=np.float64)


def heatmap_boxes(scores: pd.DataFrame, truth: pd.DataFrame, heatmap: dict | None = None,
                  thresholds=None) -> tuple[dict[str, list[dict]], int]:
    """Wang et al. 2017's protocol: for every (image, finding) with a ground-truth box, boxes from that
    finding's heatmap (stored normalised to 0..255; thresholded at each of `thresholds`, default
    WANG_THRESHOLDS = 60 and 180; one box per isolated region, every region), whatever the predicted
    probability; in pixels of the scored PNG (`width` x `height`), the cells placed at the centres the
    heatmap description gives. Returns (boxes by image, images left out because their original size is
    unknown: they get no boxes)."""
    shape = tuple(heatmap["shape"][-2:]) if heatmap and heatmap.get("shape") else None
    centres = centres_from_metadata(heatmap)
    out: dict[str, list[dict]] = {}
    unknown_size = 0
    rows = _rows_of(scores, truth, ["heatmap", "width", "height"])
    for image_index, findings in truth.groupby("image_index")["finding"]:
        heatmap_bytes, width, height = rows.get(image_index, (None, None, None))
        if heatmap_bytes is None:
            continue
        if pd.isna(width) or pd.isna(height):
            unknown_size += 1
            continue
        maps = decode_heatmaps([heatmap_bytes], shape or _square_map_shape(heatmap_bytes))[0]
        out[image_index] = boxes_for_image(maps, int(width), int(height),
                                           findings=sorted(set(findings)), max_boxes=None, centres=centres,
                                           threshold=WANG_THRESHOLDS if thresholds is None else thresholds)
    return out, unknown_size


def scored_boxes(scores: pd.DataFrame, truth: pd.DataFrame) -> dict[str, list[dict]]:
    """The boxes the scoring job wrote (its own gate, threshold and region count), for the truth images."""
    return {image_index: [] if boxes is None else [dict(box) for box in boxes]
            for image_index, (boxes,) in _rows_of(scores, truth, ["boxes"]).items()}


def _rows_of(scores: pd.DataFrame, truth: pd.DataFrame, columns: list[str]) -> dict[str, tuple]:
    """image_index -> values of `columns` (None where a column is absent) for the scored images that have
    truth boxes, read in one step: per-cell pandas lookups copy the frame's attrs on every call."""
    present = scores.index.intersection(pd.Index(truth["image_index"].drop_duplicates()))
    found = [c for c in columns if c in scores.columns]
    values = scores.loc[present, found]
    return {image: tuple(row.get(c) for c in columns)
            for image, row in zip(present, values.to_dict("records"))}


def _localize(frame: pd.DataFrame, heatmap: dict | None, boxes: dict | None, truth: pd.DataFrame,
              patients: dict, n_boot: int) -> tuple[dict, dict[str, list[dict]], int]:
    """Localization of one model under each protocol, with patient-bootstrap CIs: (protocols with "result"
    and "ci", Wang-protocol boxes by image, images without a known original size)."""
    predicted, unknown_size = heatmap_boxes(frame, truth, heatmap)
    protocols = localization_protocols(heatmap, boxes)
    sources = {"wang2017": predicted}
    if "boxes" in frame.columns:
        sources["scored_boxes"] = scored_boxes(frame, truth)
    else:
        protocols.pop("scored_boxes")
    for key, boxes_by_image in sources.items():
        protocols[key]["result"] = localization_accuracy(boxes_by_image, truth)
        protocols[key]["ci"] = localization_ci(boxes_by_image, truth, patients, n_boot=n_boot)
    return protocols, predicted, unknown_size


def newest_model_rows(scores: pd.DataFrame, uri: str) -> tuple[pd.DataFrame, str | None]:
    """The rows of the newest model in an output that several checkpoints scored into (a retrained model
    whose run was partial or deferred leaves images of both): evaluating a mix would credit neither."""
    if "model_id" not in scores.columns or scores["model_id"].nunique() <= 1:
        return scores, None
    newest = scores.sort_values("scored_at")["model_id"].iloc[-1]
    kept = scores[scores["model_id"] == newest]
    return kept, (f"{uri}: scores of {scores['model_id'].nunique()} models; evaluating only the newest, "
                  f"model_id {newest} ({len(kept)} of {len(scores)} rows)")


@dataclass
class _Joined:
    """The dataset's rows with every model's scores beside them (`joined`: one column per model and finding)."""

    joined: pd.DataFrame
    scored: dict[str, pd.DataFrame]  # model -> its scores, indexed by image_index
    described: dict[str, dict]  # model -> its scores' attrs: heatmap, boxes, model_init, metadata_features
    warnings: list[str]


def evaluate_scores(config: EvaluationConfig, load_scores) -> dict:
    """`load_scores(uri) -> DataFrame` (image_index, probability columns, optional heatmap/boxes)."""
    outputs = load_outputs(config, load_scores)
    others = read_beside(config.beside, config.s3_endpoint)
    source = open_source(DataConfig(data=config.data, s3_endpoint=config.s3_endpoint,
                                    split=SplitConfig(kind=config.split_kind)))
    truth_boxes = _truth_boxes(source.input, config.s3_endpoint)
    scores = _join(config, source, outputs)
    storage.make_folder(config.out, endpoint_url=config.s3_endpoint)
    columns = [f"{n}:{c}" for n in scores.scored for c in FINDING_COLUMNS]
    complete = scores.joined[columns].notna().all(axis=1)
    rows = scores.joined[complete]
    test, val = rows[rows["split"] == config.split], rows[rows["split"] == "val"]
    missing = int((~complete & (scores.joined["split"] == config.split)).sum())
    notes = [f"{config.split} rows with scores from every model: {len(test)} (missing for {missing})",
             "synthetic data: numbers are not comparable with the published real-data columns"
             if config.dataset_kind == "synthetic" else "real data", *scores.warnings]
    console.say("evaluate", f"{len(test)} {config.split} rows scored by every model ({', '.join(scores.scored)}); "
                f"CIs from {config.n_boot} patient resamples")
    metrics: dict = {"split": config.split, "dataset": config.dataset_kind, "split_hash": source.split_hash,
                     "data_split": source.input.split, "models": {}, "localization": {}, "notes": notes}
    test_truth = None if truth_boxes is None else truth_boxes[truth_boxes["image_index"].isin(test.index)]
    predicted_boxes = _summarise(config, scores, test, val, test_truth, metrics, source.split_hash)
    for name, entry in beside_models(others, set(metrics["models"])).items():
        metrics["models"][name] = entry
        if entry.get("localization"):
            metrics["localization"][name] = entry["localization"]
        notes.append(f"{name}: from {entry['evaluated_in']}, on its own test rows ({entry['label']})")
    _compare(config, scores, test, test_truth, metrics)
    _write_parquet(rows.reset_index(drop=True), storage.join(config.out, "predictions.parquet"), config.s3_endpoint)
    return _write(config, scores, test, test_truth, predicted_boxes, metrics)


def _join(config: EvaluationConfig, source, outputs: dict[str, pd.DataFrame]) -> _Joined:
    """Every model's newest scores beside the dataset's rows; warnings for split or origin mismatches."""
    manifest = source.manifest.set_index("image_index", drop=False)
    joined = manifest[["image_index", "patient_id", "split", "view_position", "follow_up", "path",
                       *FINDING_COLUMNS]].copy()
    result = _Joined(joined=joined, scored={}, described={}, warnings=[])
    columns: dict[str, pd.Series] = {}  # every model's columns, joined in one step (not one insert per column)
    for name, uri in config.scores:
        loaded, note = newest_model_rows(outputs[name], uri)
        trained_on = loaded.attrs.get("split_hash")
        if trained_on and trained_on != source.split_hash:
            note = ((note + "; ") if note else "") + (
                f"{uri}: the model was trained on split {trained_on}, this evaluation uses split "
                f"{source.split_hash}: its {config.split} rows may include images it was trained on")
        ood = (loaded.attrs.get("data_origin") or {}).get("warning")  # thorax_ray.data.origin.ood_check
        if ood:
            note = ((note + "; ") if note else "") + f"{name}: {ood}"
        if note:
            log.warning(note)
            result.warnings.append(note)
        result.described[name] = dict(loaded.attrs)
        frame = loaded.drop_duplicates("image_index", keep="last").set_index("image_index")
        unknown = len(set(frame.index) - set(joined.index))
        if unknown:
            log.warning("%s: %d scored images are not in %s; ignored", uri, unknown, config.data)
        frame = frame[frame.index.isin(joined.index)]
        if not len(frame):
            raise EvaluationError(f"--scores {name}={uri}: none of its {len(loaded)} scored images is in "
                                  f"{config.data}")
        result.scored[name] = frame
        for column in FINDING_COLUMNS + tuple(c for c in CALIBRATED_COLUMNS if c in frame.columns):
            columns[f"{name}:{column}"] = frame[column].reindex(joined.index)
    result.joined = pd.concat([joined, pd.DataFrame(columns, index=joined.index)], axis=1)
    return result


def _summarise(config: EvaluationConfig, scores: _Joined, test: pd.DataFrame, val: pd.DataFrame,
               test_truth: pd.DataFrame | None, metrics: dict, split_hash: str) -> dict[str, dict[str, list[dict]]]:
    """Each model's CIs, operating points and localization into `metrics` (thresholds written beside);
    returns model -> image -> the boxes traced from its heatmaps."""
    predicted_boxes: dict[str, dict[str, list[dict]]] = {}
    patients = dict(zip(test.index, test["patient_id"]))
    for name, frame in scores.scored.items():
        described = scores.described[name]
        localize = test_truth is not None and "heatmap" in frame and frame["heatmap"].notna().any()
        console.say("evaluate", f"{name}: AUROC and AP with CIs, operating points"
                    + (f", localization on {test_truth['image_index'].nunique()} annotated images" if localize else ""))
        entry = _model_summary(config, name, test, val, described)
        if localize:
            protocols, predicted_boxes[name], unknown_size = _localize(
                frame, described.get("heatmap"), described.get("boxes"), test_truth, patients, config.n_boot)
            entry.update(localization=protocols["wang2017"]["result"], localization_protocols=protocols)
            metrics["localization"][name] = entry["localization"]
            if unknown_size:
                metrics["notes"].append(f"{name}: {unknown_size} annotated test images have no known original "
                                        "size (source PNG unreadable when scored): no boxes, counted as misses")
        metrics["models"][name] = entry
        if entry["calibration"]["note"]:
            metrics["notes"].append(f"{name}: {entry['calibration']['note']}")
        if entry.get("thresholds") is not None:
            write_thresholds(storage.join(config.out, "thresholds"), name, entry["thresholds"],
                             split_hash=split_hash, rule=config.threshold_rule, endpoint_url=config.s3_endpoint)
    return predicted_boxes


def _compare(config: EvaluationConfig, scores: _Joined, test: pd.DataFrame, test_truth: pd.DataFrame | None,
             metrics: dict) -> None:
    """Chance localization and every pair of models' paired bootstrap difference, into `metrics`."""
    if test_truth is not None and len(test_truth):
        metrics["chance_localization"] = chance_localization(test_truth, *_image_size(scores.scored.values()))
    console.say("evaluate", "paired comparisons, plots and report")
    metrics["paired"] = [
        {"model_a": a, "model_b": b,
         "result": paired_bootstrap_difference(_labels(test), _scores(test, a), _scores(test, b),
                                               test["patient_id"].to_numpy(), n_boot=config.n_boot)}
        for a, b in itertools.combinations(scores.scored, 2)
    ]


def _write(config: EvaluationConfig, scores: _Joined, test: pd.DataFrame, test_truth: pd.DataFrame | None,
           predicted_boxes: dict, metrics: dict) -> dict:
    """Plots, overlays, metrics.json and report.html; returns `metrics` with the report's path and table."""
    labels, by_model = _labels(test), {name: _scores(test, name) for name in scores.scored}
    out, endpoint = config.out, config.s3_endpoint
    images = {
        "ROC curves": plot_roc_curves(labels, by_model, storage.join(out, "roc_curves.png"), split=config.split,
                                      endpoint_url=endpoint),
        "Precision-recall curves": plot_pr_curves(labels, by_model, storage.join(out, "pr_curves.png"),
                                                  split=config.split, endpoint_url=endpoint),
        "AUROC per finding": plot_auroc_comparison(comparison_table(metrics), storage.join(out, "auroc.png"),
                                                   ci=comparison_ci(metrics), split=config.split,
                                                   data_split=metrics["data_split"], endpoint_url=endpoint),
    }
    for name in scores.scored:
        images[f"Reliability diagrams, {name}: raw and calibrated probabilities"] = plot_reliability_diagrams(
            labels, by_model[name], _calibrated(test, name), storage.join(out, reliability_file(name)),
            title=f"{name}: reliability per finding ({config.split} split, n = {len(test)} images)",
            endpoint_url=endpoint)
    overlay_model = next(iter(predicted_boxes), None)  # the first model with localization
    overlays = {} if overlay_model is None else _overlays(
        config, scores.scored[overlay_model], overlay_model, scores.described[overlay_model].get("heatmap"), test,
        test_truth, predicted_boxes[overlay_model])
    storage.write_json(storage.join(out, "metrics.json"), metrics, endpoint_url=endpoint, default=_plain)
    report = write_report(storage.join(out, "report.html"), metrics, images=images, overlays=overlays,
                          title="thorax-ray: CNN vs metadata MLP vs fusion", endpoint_url=endpoint)
    metrics["report"] = report
    metrics["table"] = format_comparison_table(metrics)
    return metrics


def _truth_boxes(source: InputSource, endpoint: str | None) -> pd.DataFrame | None:
    """BBox_List_2017.csv of the dataset: beside its root (one existence check), else wherever the
    dataset's layout has it (a listing of the dataset)."""
    path = source.bbox_csv  # found when the source was resolved (one existence check)
    if path is None:
        try:
            path = discover(source.dataset_root, endpoint_url=endpoint).bbox_csv
        except ValueError:
            return None
    return read_bbox_list(path, endpoint_url=endpoint) if path else None


def _image_size(frames) -> tuple[int, int]:
    """(width, height) of the scored images, the frame their boxes are in (the scores' `width`/`height`
    columns; no image is read); NIH's 1024 x 1024 when no scores carry them."""
    for frame in frames:
        if {"width", "height"} <= set(frame.columns) and frame["width"].notna().any():
            return int(frame["width"].median()), int(frame["height"].median())
    return NIH_IMAGE_SIZE, NIH_IMAGE_SIZE


def _model_summary(config: EvaluationConfig, name: str, test: pd.DataFrame, val: pd.DataFrame, attrs: dict) -> dict:
    """summarize_model on the test rows (thresholds from the validation rows, subgroups by view position and
    follow-up #), with the model's provenance for its column label."""
    entry = summarize_model(_labels(test), _scores(test, name), test["patient_id"].to_numpy(),
                            labels_val=_labels(val) if len(val) else None,
                            scores_val=_scores(val, name) if len(val) else None,
                            view_position=test["view_position"].fillna("missing").to_numpy(),
                            follow_up=pd.to_numeric(test["follow_up"], errors="coerce").to_numpy(dtype=float),
                            rule=config.threshold_rule, n_boot=config.n_boot)
    entry["calibration"] = calibration_metrics(_labels(test), _scores(test, name), _calibrated(test, name),
                                               attrs.get("calibration"))
    entry.update(_provenance(attrs))
    return entry


def _provenance(attrs: dict) -> dict:
    """What the report labels a model's column with: how it was initialised and, for models that read
    metadata, which features (from the scores' commit records)."""
    init = (attrs.get("model_init") or {}).get("label") or "init unknown"
    out = {"init": init}
    if attrs.get("metadata_features"):
        out["metadata_features"] = list(attrs["metadata_features"])
    return out


def _overlays(config: EvaluationConfig, frame: pd.DataFrame, name: str, heatmap_description: dict | None,
              test: pd.DataFrame, truth_boxes: pd.DataFrame, predicted_boxes: dict[str, list[dict]]
              ) -> dict[str, Overlay]:
    """Heatmap overlays of one model (the first with localization) on test images with ground-truth boxes:
    the finding's map upsampled between its cells' centres, the Wang-protocol boxes and the truth boxes;
    each with what it shows, so that the report's summary calls it a hit or a miss."""
    if config.overlays <= 0:
        return {}
    folder = storage.join(config.out, "overlays")
    storage.make_folder(folder, endpoint_url=config.s3_endpoint)
    chosen = [i for i in truth_boxes["image_index"].drop_duplicates() if i in frame.index]
    shape = tuple(heatmap_description["shape"][-2:]) if heatmap_description else None
    centres = centres_from_metadata(heatmap_description)
    protocol = localization_protocols(heatmap_description, None)["wang2017"]["label"]
    overlays = {}
    for image_index in chosen[: config.overlays]:
        row, path = frame.loc[image_index], test.loc[image_index, "path"]
        if path is None or row.get("heatmap") is None:
            continue
        stem = os.path.splitext(safe_name("image name", image_index))[0]  # the overlay's file name
        pixels = read_original(path, endpoint_url=config.s3_endpoint)
        truth = truth_boxes[truth_boxes["image_index"] == image_index]
        finding = truth["finding"].iloc[0]
        maps = decode_heatmaps([row["heatmap"]], shape or _square_map_shape(row["heatmap"]))[0]
        heatmap = upsample_maps(maps[[FINDINGS.index(finding)]], pixels.shape[1], pixels.shape[0], centres)[0]
        predicted = [box for box in predicted_boxes.get(image_index, []) if box["finding"] == finding]
        probability = float(row[column_name(finding)])
        overlays[f"{name}: {image_index} {finding} (p={probability:.2f}); {protocol}"] = Overlay(
            plot_heatmap_overlay(pixels, heatmap, storage.join(folder, f"{stem}_{finding}.png"),
                                 truth_boxes=truth.to_dict("records"), predicted_boxes=predicted,
                                 title=f"{image_index}: {finding} p={probability:.2f}", endpoint_url=config.s3_endpoint),
            model=name, finding=finding, probability=probability)
    return overlays


def _square_map_shape(value: bytes) -> tuple[int, int]:
    """Fallback when the scores carry no heatmap metadata: square maps, 14 of them."""
    side = int(round((len(value) / len(FINDINGS)) ** 0.5))
    return side, side


def _write_parquet(frame: pd.DataFrame, uri: str, endpoint_url: str | None) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    storage.write_bytes(uri, buffer.getvalue(), endpoint_url=endpoint_url)


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


