"""Localization accuracy following Wang et al. 2017 (ChestX-ray14), and chance baselines.

Boxes are (x, y, w, h) in the pixel frame of the ground truth (BBox_List_2017.csv: the original
1024 x 1024 images); predicted boxes must be scaled to that frame before they are scored.

- IoBB = area(pred & truth) / area(pred); IoU = area(pred & truth) / area(pred | truth).
- A ground-truth box of class c counts as correctly localized at threshold T when ANY predicted box
  of class c on the same image has IoBB (resp. IoU) > T. Accuracy = correct / ground-truth boxes.
- False positives at T: per ground-truth (image, class) pair, the number of predicted boxes of that
  class on that image that overlap no ground-truth box of that class above T (same measure as the
  accuracy: IoBB or IoU); "avg_false_positives" averages them over the pairs, per threshold.
- Only the boxed classes (BOXED_FINDINGS) and only images with a ground-truth box of the class are
  scored; predictions of a class on an image without its truth box are ignored (that image was not
  annotated for the class).

Threshold keys in the results are strings ("0.1", "0.25", ...) so that they survive a JSON round trip.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from thorax_ray.evaluation.classification import (complete_row_means, mean_resamples, patient_resample_counts,
                                                  percentile_ci)
from thorax_ray.labels import BBOX_LABEL_ALIASES, BOXED_FINDINGS, FINDINGS

IOBB_THRESHOLDS = (0.1, 0.25, 0.5, 0.75, 0.9)
MEAN_ROW = "mean"
IOU_THRESHOLDS = (0.1, 0.3, 0.5)
NIH_IMAGE_SIZE = 1024

_SPELLING = {f: f for f in FINDINGS}
_SPELLING.update({f.lower(): f for f in FINDINGS})
_SPELLING.update({alias: name for alias, name in BBOX_LABEL_ALIASES.items()})
_SPELLING.update({alias.lower(): name for alias, name in BBOX_LABEL_ALIASES.items()})


def threshold_key(t: float) -> str:
    """The key a threshold has in results: 0.25 -> "0.25"."""
    return format(float(t), "g")


def finding_name(label: str) -> str:
    """FINDINGS spelling of a finding given as FINDINGS name, column name or `Infiltrate`."""
    name = _SPELLING.get(str(label).strip()) or _SPELLING.get(str(label).strip().lower())
    if name is None:
        raise ValueError(f"unknown finding {label!r}; known: {', '.join(FINDINGS)}")
    return name


# -------------------------------------------------------------------------------------------- overlap

def _as_boxes(boxes) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.shape[-1:] != (4,):
        raise ValueError(f"expected boxes as (..., 4) arrays of x, y, w, h, got shape {arr.shape}")
    return arr


def _intersection(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    x0 = np.maximum(pred[..., 0], truth[..., 0])
    y0 = np.maximum(pred[..., 1], truth[..., 1])
    x1 = np.minimum(pred[..., 0] + pred[..., 2], truth[..., 0] + truth[..., 2])
    y1 = np.minimum(pred[..., 1] + pred[..., 3], truth[..., 1] + truth[..., 3])
    return np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)


def _area(box: np.ndarray) -> np.ndarray:
    return np.clip(box[..., 2], 0, None) * np.clip(box[..., 3], 0, None)


def _scalar_or_array(value: np.ndarray):
    return float(value) if np.ndim(value) == 0 else value


def iobb_array(pred, truth) -> np.ndarray:
    """IoBB of (..., 4) predicted vs truth boxes, broadcasting (e.g. (P, 1, 4) vs (1, T, 4) gives a
    (P, T) matrix); 0 where the predicted box has no area."""
    pred, truth = _as_boxes(pred), _as_boxes(truth)
    inter, area = _intersection(pred, truth), _area(pred)
    return np.divide(inter, area, out=np.zeros(np.broadcast(inter, area).shape), where=area > 0)


def iou_array(pred, truth) -> np.ndarray:
    """IoU of (..., 4) predicted vs truth boxes, broadcasting; 0 where the union has no area."""
    pred, truth = _as_boxes(pred), _as_boxes(truth)
    inter = _intersection(pred, truth)
    union = _area(pred) + _area(truth) - inter
    return np.divide(inter, union, out=np.zeros(np.broadcast(inter, union).shape), where=union > 0)


def iobb(pred_box, truth_box):
    """area(pred & truth) / area(pred) for (x, y, w, h) boxes; a float for single boxes."""
    return _scalar_or_array(iobb_array(pred_box, truth_box))


def iou(pred_box, truth_box):
    """area(pred & truth) / area(pred | truth) for (x, y, w, h) boxes; a float for single boxes."""
    return _scalar_or_array(iou_array(pred_box, truth_box))


# ---------------------------------------------------------------------------------------- accuracy

def _truth_frame(truth: pd.DataFrame) -> pd.DataFrame:
    missing = {"image_index", "finding", "x", "y", "w", "h"} - set(truth.columns)
    if missing:
        raise ValueError(f"truth boxes lack columns {sorted(missing)} (need image_index, finding, x, y, w, h)")
    frame = truth[["image_index", "finding", "x", "y", "w", "h"]].copy()
    frame["finding"] = [finding_name(f) for f in frame["finding"]]
    return frame[frame["finding"].isin(BOXED_FINDINGS)]


def _predicted_by_pair(predicted: Mapping[str, Iterable[Mapping]]) -> dict[tuple[str, str], np.ndarray]:
    """(image_index, finding) -> (K, 4) predicted boxes."""
    pairs: dict[tuple[str, str], list] = {}
    for image, boxes in predicted.items():
        for box in boxes or ():
            pairs.setdefault((str(image), finding_name(box["finding"])), []).append(
                (box["x"], box["y"], box["w"], box["h"]))
    return {k: np.asarray(v, dtype=np.float64).reshape(-1, 4) for k, v in pairs.items()}


def _boxes_by_image(rows: pd.DataFrame) -> Iterator[tuple[str, np.ndarray]]:
    """(image_index, (T, 4) truth boxes) per image, images in sorted order, boxes in row order (a groupby in
    numpy: pandas' per-group indexing dominated an evaluation of the 112k-image layout)."""
    images = rows["image_index"].astype(str).to_numpy()
    coords = rows[["x", "y", "w", "h"]].to_numpy(dtype=np.float64)
    order = np.argsort(images, kind="stable")
    images, coords = images[order], coords[order]
    starts = np.flatnonzero(np.r_[True, images[1:] != images[:-1]]) if len(images) else np.zeros(0, dtype=np.int64)
    for start, end in zip(starts, [*starts[1:], len(images)]):
        yield str(images[start]), coords[start:end]


def localization_accuracy(predicted: Mapping[str, Sequence[Mapping]], truth: pd.DataFrame,
                          iobb_thresholds: Sequence[float] = IOBB_THRESHOLDS,
                          iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
                          *, only_predicted_images: bool = False) -> dict[str, dict]:
    """Wang et al. 2017 localization accuracy per boxed finding.

    predicted: image_index -> list of {"finding", "x", "y", "w", "h", "score"} (score is not used: every
        box counts). An image of `truth` missing from `predicted` has no predicted boxes (all misses),
        unless `only_predicted_images`, which drops truth boxes of images absent from `predicted`.
    truth: DataFrame with image_index, finding (FINDINGS spelling; `Infiltrate` is accepted), x, y, w, h.

    Returns finding -> {"n": ground-truth boxes, "n_images": ground-truth (image, class) pairs,
    "iobb": {"T": accuracy}, "iou": {"T": accuracy}, "avg_false_positives": {"iobb": {"T": ...},
    "iou": {"T": ...}}, "avg_predicted_boxes": ...}; accuracies and averages are None when n == 0.
    """
    frame = _truth_frame(truth)
    if only_predicted_images:
        frame = frame[frame["image_index"].astype(str).isin({str(k) for k in predicted})]
    pred_pairs = _predicted_by_pair(predicted)
    measures = {"iobb": (iobb_array, tuple(iobb_thresholds)), "iou": (iou_array, tuple(iou_thresholds))}
    out: dict[str, dict] = {}
    for finding in BOXED_FINDINGS:
        rows = frame[frame["finding"] == finding]
        correct = {m: np.zeros(len(ts), dtype=np.int64) for m, (_, ts) in measures.items()}
        false_pos = {m: np.zeros(len(ts), dtype=np.int64) for m, (_, ts) in measures.items()}
        n_boxes, n_pairs, n_predicted = 0, 0, 0
        for image, truth_boxes in _boxes_by_image(rows):
            preds = pred_pairs.get((image, finding), np.zeros((0, 4)))
            n_boxes += len(truth_boxes)
            n_pairs += 1
            n_predicted += len(preds)
            for m, (fn, ts) in measures.items():
                overlap = fn(preds[:, None, :], truth_boxes[None, :, :])  # (K, T)
                for k, t in enumerate(ts):
                    above = overlap > t
                    correct[m][k] += int(above.any(axis=0).sum())
                    false_pos[m][k] += int((~above.any(axis=1)).sum())

        def per_threshold(values, ts, den):
            return {threshold_key(t): (float(v / den) if den else None) for v, t in zip(values, ts)}

        out[finding] = {
            "n": n_boxes,
            "n_images": n_pairs,
            "iobb": per_threshold(correct["iobb"], measures["iobb"][1], n_boxes),
            "iou": per_threshold(correct["iou"], measures["iou"][1], n_boxes),
            "avg_false_positives": {m: per_threshold(false_pos[m], measures[m][1], n_pairs) for m in measures},
            "avg_predicted_boxes": float(n_predicted / n_pairs) if n_pairs else None,
        }
    return out


# --------------------------------------------------------------------------------- confidence intervals

def truth_box_hits(predicted: Mapping[str, Sequence[Mapping]], truth: pd.DataFrame,
                   thresholds: Sequence[float] = IOBB_THRESHOLDS, measure: str = "iobb") -> pd.DataFrame:
    """One row per ground-truth box of a boxed finding: image_index, finding and, per threshold key, whether
    it is localized (`localization_accuracy`'s rule: some predicted box of its class on its image overlaps
    it above T)."""
    overlap = {"iobb": iobb_array, "iou": iou_array}[measure]
    frame = _truth_frame(truth).reset_index(drop=True)
    pairs = _predicted_by_pair(predicted)
    hits = np.zeros((len(frame), len(thresholds)), dtype=bool)
    for row, (image, finding, *box) in enumerate(frame[["image_index", "finding", "x", "y", "w", "h"]].itertuples(
            index=False)):
        preds = pairs.get((str(image), finding))
        if preds is not None and len(preds):
            values = overlap(preds, np.asarray(box, dtype=np.float64)[None, :])
            hits[row] = [bool((values > t).any()) for t in thresholds]
    out = frame[["image_index", "finding"]].copy()
    for k, t in enumerate(thresholds):
        out[threshold_key(t)] = hits[:, k]
    return out


def localization_ci(predicted: Mapping[str, Sequence[Mapping]], truth: pd.DataFrame, patients: Mapping[str, object],
                    thresholds: Sequence[float] = IOBB_THRESHOLDS, *, n_boot: int = 1000, seed: int = 0,
                    alpha: float = 0.05) -> dict:
    """Percentile CIs of the T(IoBB) accuracies by the patient bootstrap of the classification CIs (the same
    resamples for the same patients, n_boot and seed): per resample, accuracy = localized boxes / boxes over
    the drawn patients' images. `patients`: image_index -> patient id (truth boxes of other images are
    left out). Returns {finding: {T: [lo, hi] | None}, "mean": {T: [lo, hi] | None}, "resamples": {"used",
    "of", "classes"}}; the mean is over the findings with boxes, from the resamples that have boxes of all
    of them."""
    hits = truth_box_hits(predicted, truth, thresholds)
    hits = hits[hits["image_index"].astype(str).isin({str(k) for k in patients})]
    keys = [threshold_key(t) for t in thresholds]
    ids = hits["image_index"].astype(str).map({str(k): v for k, v in patients.items()})
    _, patient = np.unique(ids.to_numpy().astype(str), return_inverse=True)
    n_patients = int(patient.max()) + 1 if len(hits) else 0
    findings = list(BOXED_FINDINGS)
    boxes = np.zeros((n_patients, len(findings)))
    localized = np.zeros((len(keys), n_patients, len(findings)))
    for j, finding in enumerate(findings):
        mine = (hits["finding"] == finding).to_numpy()
        boxes[:, j] = np.bincount(patient[mine], minlength=n_patients)
        for k, key in enumerate(keys):
            localized[k, :, j] = np.bincount(patient[mine], weights=hits.loc[mine, key].to_numpy(float),
                                             minlength=n_patients)
    boot = np.full((len(keys), n_boot, len(findings)), np.nan)
    done = 0
    for counts in patient_resample_counts(max(n_patients, 1), n_boot, seed) if n_patients else ():
        drawn_boxes = counts @ boxes
        for k in range(len(keys)):
            boot[k, done:done + len(counts)] = np.divide(counts @ localized[k], drawn_boxes,
                                                         out=np.full(drawn_boxes.shape, np.nan), where=drawn_boxes > 0)
        done += len(counts)
    present = boxes.sum(axis=0) > 0
    out: dict = {f: {key: (percentile_ci(boot[k, :, j], alpha) if present[j] else None) for k, key in enumerate(keys)}
                 for j, f in enumerate(findings)}
    out[MEAN_ROW] = {key: percentile_ci(complete_row_means(boot[k], present), alpha) for k, key in enumerate(keys)}
    out["resamples"] = mean_resamples(boot[0], present)
    return out


# ------------------------------------------------------------------------------------------- chance

def chance_localization(truth: pd.DataFrame, image_width: int = NIH_IMAGE_SIZE, image_height: int = NIH_IMAGE_SIZE,
                        iobb_thresholds: Sequence[float] = IOBB_THRESHOLDS,
                        iou_thresholds: Sequence[float] = IOU_THRESHOLDS) -> dict[str, dict]:
    """Accuracies of two box-only baselines that look at no image:

    - "whole_image": one box covering the whole image on every annotated image (IoBB = area of the
      truth box / area of the image).
    - "median_box": per class, one box with the median x, y, w, h of that class's ground-truth boxes.
      Fitted on the very boxes it is scored on, so it is an optimistic baseline.

    Returns {"whole_image": localization_accuracy(...), "median_box": localization_accuracy(...)}.
    """
    frame = _truth_frame(truth)
    whole: dict[str, list] = {}
    median: dict[str, list] = {}
    medians = {finding: tuple(float(v) for v in row)
               for finding, row in frame.groupby("finding")[["x", "y", "w", "h"]].median().iterrows()}
    for image, finding in frame[["image_index", "finding"]].drop_duplicates().itertuples(index=False):
        whole.setdefault(str(image), []).append(
            {"finding": finding, "x": 0.0, "y": 0.0, "w": float(image_width), "h": float(image_height), "score": 1.0})
        x, y, w, h = medians[finding]
        median.setdefault(str(image), []).append({"finding": finding, "x": x, "y": y, "w": w, "h": h, "score": 1.0})
    return {
        "whole_image": localization_accuracy(whole, frame, iobb_thresholds, iou_thresholds),
        "median_box": localization_accuracy(median, frame, iobb_thresholds, iou_thresholds),
    }


def mean_accuracy(result: Mapping[str, dict], measure: str = "iobb") -> dict[str, float | None]:
    """Threshold -> mean accuracy over the boxed classes that have ground-truth boxes."""
    keys: list[str] = []
    for entry in result.values():
        keys.extend(k for k in entry[measure] if k not in keys)
    out = {}
    for k in keys:
        values = [e[measure][k] for e in result.values() if e[measure].get(k) is not None]
        out[k] = float(np.mean(values)) if values else None
    return out
