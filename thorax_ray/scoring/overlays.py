"""Overlay PNGs of scored images: for each image, one panel per finding that is predicted
(probability >= threshold) or labelled present (when the input has labels), showing the image with the
finding's heatmap (upsampled like the boxes: bilinear between the cells' centres), its predicted boxes (red,
dashed) and its ground-truth boxes (green, from BBox_List_2017.csv when the input dataset has one).
An image with no such finding shows its most probable finding. matplotlib (Agg) is imported inside."""
from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import numpy as np

from thorax_ray import storage
from thorax_ray.attribution import centres_from_metadata, decode_heatmaps, upsample_maps
from thorax_ray.data.decode import decode_gray8
from thorax_ray.data.inputs import InputSource
from thorax_ray.data.nih_csv import read_bbox_list
from thorax_ray.labels import FINDING_COLUMNS, FINDINGS
from thorax_ray.names import safe_name
from thorax_ray.scoring.output import read_scores

log = logging.getLogger(__name__)

MAX_PANELS = 4
_DPI = 90


def _pyplot():
    import matplotlib  # deferred: matplotlib (slow import)

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # deferred: matplotlib (slow import)

    return plt


def read_original(uri: str, *, endpoint_url: str | None = None) -> np.ndarray:
    """The image (PNG, JPEG or DICOM) at full resolution as 8-bit gray (H, W), decoded as for scoring."""
    fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
    return decode_gray8(fs.cat_file(path))


def panel_findings(probabilities: np.ndarray, labels: np.ndarray | None,
                   threshold: float | Sequence[float] | None) -> list[int]:
    """Indices of the findings to draw: labelled ones first, then predicted (probability >= the finding's
    threshold: one for all or one per finding; None: every finding), by probability."""
    order = [int(i) for i in np.argsort(-probabilities, kind="stable")]
    present = [i for i in order if labels is not None and labels[i] == 1]
    gate = np.zeros(len(probabilities)) if threshold is None else np.broadcast_to(
        np.asarray(threshold, dtype=np.float64), (len(probabilities),))
    predicted = [i for i in order if probabilities[i] >= gate[i] and i not in present]
    chosen = (present + predicted)[:MAX_PANELS]
    return chosen or order[:1]


def draw_overlay(image: np.ndarray, maps: np.ndarray, probabilities: np.ndarray, findings: list[int], *,
                 predicted_boxes, truth_boxes, labels: np.ndarray | None, title: str, centres=None):
    """A figure with one panel per finding index in `findings` (`centres`: where the map cells sit)."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle  # deferred: matplotlib (slow import)

    height, width = image.shape
    fig, axes = plt.subplots(1, len(findings), figsize=(4 * len(findings), 4.3), squeeze=False,
                             constrained_layout=True)
    upsampled = upsample_maps(maps[findings], width, height, centres)
    for ax, k, heat in zip(axes[0], findings, upsampled):
        name = FINDINGS[k]
        ax.imshow(image, cmap="gray", extent=(0, width, height, 0))
        ax.imshow(heat, cmap="jet", alpha=0.35, vmin=0, vmax=255, extent=(0, width, height, 0))
        for boxes, colour, style in ((truth_boxes, "lime", "-"), (predicted_boxes, "red", "--")):
            for box in boxes:
                if box["finding"] != name:
                    continue
                ax.add_patch(Rectangle((box["x"], box["y"]), box["w"], box["h"], fill=False, edgecolor=colour,
                                       linestyle=style, linewidth=1.5))
                if box.get("score") is not None:
                    ax.text(box["x"], box["y"] - 2, f"{float(box['score']):.2f}", color=colour, fontsize=7,
                            va="bottom")
        truth = "" if labels is None or np.isnan(labels[k]) else (" labelled" if labels[k] == 1 else " not labelled")
        ax.set_title(f"{name}: p = {probabilities[k]:.2f}{truth}", fontsize=9)
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return fig


def write_overlays(out: str, source: InputSource, folder: str, *, model_id: str, run_id: str | None = None,
                   limit: int = 8, threshold: float | Sequence[float] | None = 0.5,
                   endpoint_url: str | None = None) -> list[str]:
    """Writes `limit` overlay PNGs (first images by name of this run, else of any committed run of the
    model that are in the input) to `folder` (local or s3://); returns their URIs."""
    if limit < 1:
        return []
    frame = read_scores(out, model_id, run_id=run_id, endpoint_url=endpoint_url)
    if not len(frame):
        frame = read_scores(out, model_id, endpoint_url=endpoint_url)
        frame = frame[frame["image_index"].isin(source.rows["image_index"])]
    if "heatmap" not in frame.columns or "heatmap" not in frame.attrs:
        log.warning("no heatmaps in the output of model %s (metadata model or --method none): no overlays", model_id)
        return []
    frame = frame.sort_values("image_index").head(limit)
    if not len(frame):
        return []
    maps = decode_heatmaps(frame["heatmap"].tolist(), frame.attrs["heatmap"]["shape"])
    centres = centres_from_metadata(frame.attrs["heatmap"])
    probabilities = frame[list(FINDING_COLUMNS)].to_numpy(dtype=np.float64)
    rows = source.rows.set_index("image_index")
    truth = None
    if source.bbox_csv:
        truth = read_bbox_list(source.bbox_csv, endpoint_url=endpoint_url)
    fs, base = storage.filesystem(folder, endpoint_url=endpoint_url)
    fs.makedirs(base, exist_ok=True)
    plt = _pyplot()
    written = []
    for i, row in enumerate(frame.itertuples(index=False)):
        try:
            image = read_original(row.path, endpoint_url=endpoint_url)
        except Exception as error:  # noqa: BLE001 - an overlay is a convenience, not the output
            log.warning("overlay of %s skipped: cannot read %s (%s)", row.image_index, row.path, error)
            continue
        labels = None
        if source.has_labels and row.image_index in rows.index:
            labels = rows.loc[row.image_index, list(FINDING_COLUMNS)].to_numpy(dtype=np.float64)
        truth_boxes = ([] if truth is None
                       else truth[truth["image_index"] == row.image_index].to_dict("records"))
        predicted = list(row.boxes) if getattr(row, "boxes", None) is not None else []
        findings = panel_findings(probabilities[i], labels, threshold)
        fig = draw_overlay(image, maps[i], probabilities[i], findings, predicted_boxes=predicted,
                           truth_boxes=truth_boxes, labels=labels, centres=centres,
                           title=f"{row.image_index} ({image.shape[1]}x{image.shape[0]}), model {model_id}")
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=_DPI, format="png", metadata={"Software": None})
        plt.close(fig)
        path = f"{base}/{safe_name('image name', row.image_index, where=out).rsplit('.', 1)[0]}.overlay.png"
        fs.pipe_file(path, buffer.getvalue())
        written.append(storage.to_uri(fs, path))
    return written
