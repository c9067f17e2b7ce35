"""Calibration in the evaluation: expected calibration error per finding before (raw probabilities) and after
(the scores' `<finding>_calibrated` columns, the checkpoint's calibration applied at scoring) and a reliability
diagram grid per model (PNG, local or s3://; matplotlib imported inside the function, Agg backend)."""
from __future__ import annotations

import io
import os

import numpy as np

from thorax_ray import storage
from thorax_ray.calibration import ECE_BINS, ece_per_finding, expected_calibration_error, reliability_curve
from thorax_ray.labels import FINDINGS

ECE_DEFINITION = (f"expected calibration error: {ECE_BINS} equal-width bins of the predicted probability, "
                  "sum over bins of (rows in bin / rows) x |fraction of positives - mean predicted probability| "
                  "(Naeini et al. 2015; Guo et al. 2017, per finding on the positive class)")
NO_COLUMNS = ("the scores have no calibrated columns (scored before calibration existed): only the raw "
              "calibration error is shown; score again to get them")
NOT_APPLIED = ("the checkpoint had no calibration when scored (trained before calibration existed): the "
               "calibrated columns repeat the raw probabilities")
_DPI = 90


def calibration_metrics(labels, raw, calibrated, described: dict | None, *, bins: int = ECE_BINS) -> dict:
    """One model's "calibration" entry of metrics.json, from (N, 14) labels, raw probabilities and calibrated
    probabilities (None when the scores lack the columns); `described` is the scores' calibration description
    (thorax_ray.calibration.describe_calibration via read_scores' attrs; None for older scores):

        {"definition", "bins", "available": bool (calibrated columns present), "applied": bool | None (the
         checkpoint had a calibration), "method": str | None, "ece_raw": {finding: float | None},
         "ece_calibrated": {finding: float | None} | None, "mean_ece_raw", "mean_ece_calibrated",
         "positives": {finding: int}, "note": str | None}"""
    ece_raw = ece_per_finding(labels, raw, bins)
    ece_calibrated = None if calibrated is None else ece_per_finding(labels, calibrated, bins)
    described = described or {}
    applied = described.get("applied") if calibrated is not None else None
    note = NO_COLUMNS if calibrated is None else NOT_APPLIED if applied is False else None
    return {"definition": ECE_DEFINITION, "bins": int(bins), "available": calibrated is not None, "applied": applied,
            "method": described.get("method"), "ece_raw": ece_raw, "ece_calibrated": ece_calibrated,
            "mean_ece_raw": _mean(ece_raw),
            "mean_ece_calibrated": None if ece_calibrated is None else _mean(ece_calibrated),
            "positives": {f: int(np.asarray(labels)[:, i].sum()) for i, f in enumerate(FINDINGS)}, "note": note}


def _mean(values: dict[str, float | None]) -> float | None:
    defined = [v for v in values.values() if v is not None]
    return float(np.mean(defined)) if defined else None


def reliability_file(model: str) -> str:
    """The diagram's file name in the evaluation's output folder."""
    return f"reliability_{model}.png"


def _curve(ax, y: np.ndarray, p: np.ndarray, label: str, bins: int, style: dict) -> None:
    curve = reliability_curve(y, p, bins)
    ece = expected_calibration_error(y, p, bins)
    ax.plot(curve["confidence"], curve["accuracy"], marker="o", markersize=3, linewidth=1.2,
            label=f"{label}: ECE {ece:.3f}", **style)


def plot_reliability_diagrams(labels, raw, calibrated, path, *, title: str, bins: int = ECE_BINS,
                              endpoint_url: str | None = None) -> str:
    """One panel per finding: fraction of positives against mean predicted probability in each non-empty bin
    (the bins of the ECE), for the raw probabilities and, when given, the calibrated ones, each with its ECE in
    the legend; the diagonal is perfect calibration. Returns `path` (local or s3://)."""
    import matplotlib  # deferred: matplotlib (slow import)

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # deferred: matplotlib (slow import)

    labels, raw = np.asarray(labels, dtype=np.float64), np.asarray(raw, dtype=np.float64)
    fig, axes = plt.subplots(4, 4, figsize=(15, 14), constrained_layout=True)
    fig.suptitle(title, fontsize=14)
    for ax in axes.ravel()[len(FINDINGS):]:
        ax.axis("off")
    for i, (finding, ax) in enumerate(zip(FINDINGS, axes.ravel())):
        y = labels[:, i]
        ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1)
        ax.set_title(f"{finding} (positives {int(y.sum())})", fontsize=10)
        ax.set(xlim=(0, 1), ylim=(0, 1.01))
        ax.set_xlabel("mean predicted probability", fontsize=8)
        ax.set_ylabel("fraction of positives", fontsize=8)
        ax.tick_params(labelsize=7)
        if not len(y):
            continue
        _curve(ax, y, raw[:, i], "raw", bins, {"color": "tab:red"})
        if calibrated is not None:
            _curve(ax, y, np.asarray(calibrated, dtype=np.float64)[:, i], "calibrated", bins, {"color": "tab:blue"})
        ax.legend(loc="upper left", fontsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=_DPI, format="png", metadata={"Software": None})
    plt.close(fig)
    storage.write_bytes(os.fspath(path), buffer.getvalue(), endpoint_url=endpoint_url)
    return os.fspath(path)
