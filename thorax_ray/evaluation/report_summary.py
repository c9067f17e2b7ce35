"""The report's first screen: one sentence per paired comparison (and per model in no pair), the headline
chart, and a strip of overlay thumbnails of hits and misses at the models' operating thresholds."""
from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from thorax_ray import storage
from thorax_ray.evaluation.comparison import comparison_sentence, model_sentence, models_of
from thorax_ray.evaluation.embed import data_uri
from thorax_ray.evaluation.plots import headline_chart
from thorax_ray.evaluation.references import MEAN_ROW

STRIP_SIZE = 4  # overlay thumbnails in the summary: up to half hits, half misses
THUMBNAIL_PX = 360  # their longer side, in image pixels (shown at 180 CSS px: sharp on a 2x screen)


@dataclass(frozen=True)
class Overlay:
    """A heatmap overlay with what it shows, so that the summary can call it a hit or a miss: `src` a PNG
    path or URI (or PNG bytes); the `model` that scored the image, the `finding` drawn, the `probability`
    the model gave it and whether the image has the finding (`positive`, from the ground truth). Judged
    against the model's operating threshold for the finding (metrics' models.<model>.thresholds)."""

    src: object
    model: str
    finding: str
    probability: float
    positive: bool = True


def source(value) -> object:
    return value.src if isinstance(value, Overlay) else value


def _thumbnail_uri(image, endpoint_url: str | None = None) -> str:
    """A small PNG copy of an overlay (THUMBNAIL_PX, 256 colours: about a third of the bytes) as a data URI,
    so the summary's strip adds little to the page; the image as it is when it is not one Pillow reads."""
    data = bytes(image) if isinstance(image, (bytes, bytearray)) else storage.read_bytes(
        os.fspath(image), endpoint_url=endpoint_url)
    try:
        with Image.open(io.BytesIO(data)) as opened:
            small = opened.convert("RGB")
    except (UnidentifiedImageError, OSError):
        return data_uri(data)
    small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    small.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(buffer, format="PNG", optimize=True)
    return data_uri(buffer.getvalue())


def pairs(metrics: Mapping) -> list[tuple[str, str, Mapping]]:
    """(model a, model b, paired_bootstrap_difference result) of every paired comparison."""
    paired = metrics.get("paired") or []
    if isinstance(paired, Mapping):
        paired = [{"model_a": k, "model_b": "", "result": v} for k, v in paired.items()]
    return [(str(item.get("model_a", "")), str(item.get("model_b", "")), item.get("result") or {}) for item in paired]


def _outcome(overlay: Overlay, metrics: Mapping) -> dict | None:
    """A hit or a miss at the model's operating threshold for the finding (None when it has none)."""
    threshold = ((models_of(metrics).get(overlay.model) or {}).get("thresholds") or {}).get(overlay.finding)
    if threshold is None:
        return None
    flagged = overlay.probability >= threshold
    hit = flagged == overlay.positive
    kind = {(True, True): "true positive", (False, True): "false negative", (True, False): "false positive",
            (False, False): "true negative"}[(flagged, overlay.positive)]
    # how sure the model was of what it said: hits and misses are shown most confident first
    confidence = overlay.probability if flagged else 1.0 - overlay.probability
    return {"hit": hit, "kind": kind, "confidence": confidence,
            "text": f"{'hit' if hit else 'miss'} ({kind}): {overlay.finding}, p = {overlay.probability:.2f} "
                    f"{'≥' if flagged else '<'} threshold {float(threshold):.2f} ({overlay.model})"}


def _strip(overlays: Mapping[str, object] | None, metrics: Mapping, endpoint_url: str | None) -> list[dict]:
    """Up to STRIP_SIZE overlay thumbnails: half hits, half misses (each most confident first; the other
    kind fills a short side). Overlays without a known outcome (plain paths) are shown in their order."""
    judged, plain = [], []
    for caption, value in (overlays or {}).items():
        outcome = _outcome(value, metrics) if isinstance(value, Overlay) else None
        (judged if outcome else plain).append((str(caption), value, outcome))
    hits = sorted((o for o in judged if o[2]["hit"]), key=lambda o: -o[2]["confidence"])
    misses = sorted((o for o in judged if not o[2]["hit"]), key=lambda o: -o[2]["confidence"])
    half = STRIP_SIZE // 2
    take_hits = min(len(hits), max(half, STRIP_SIZE - len(misses)))
    chosen = hits[:take_hits] + misses[:STRIP_SIZE - take_hits]
    chosen += plain[:STRIP_SIZE - len(chosen)]
    return [{"caption": caption, "src": _thumbnail_uri(source(value), endpoint_url),
             "text": outcome["text"] if outcome else caption,
             "css_class": ("hit" if outcome["hit"] else "miss") if outcome else ""}
            for caption, value, outcome in chosen]


def summary(metrics: Mapping, overlays: Mapping[str, object] | None, endpoint_url: str | None) -> dict:
    """The answer first: a sentence per paired comparison (and per model in no pair), the headline chart
    (plots.headline_chart; None when no model has a mean AUROC) and the hits-and-misses strip."""
    models = models_of(metrics)
    compared = pairs(metrics)
    differences = [(a, b, (r.get(MEAN_ROW) or {}).get("delta"), (r.get(MEAN_ROW) or {}).get("ci"))
                   for a, b, r in compared]
    sentences = [comparison_sentence(a, b or "the other model", delta, ci) for a, b, delta, ci in differences]
    in_pairs = {name for a, b, _ in compared for name in (a, b)}
    split = str(metrics.get("split", "test"))
    means = [(name, entry.get("mean_auroc"), (entry.get("auroc_ci") or {}).get(MEAN_ROW))
             for name, entry in models.items()]
    for name, mean, ci in means:
        if name not in in_pairs:
            sentences.append(model_sentence(name, mean, ci, split=split, alone=not compared,
                                            elsewhere=bool(models[name].get("evaluated_in"))))
    chart = None
    if any(m is not None for _, m, _ in means):
        differences = [(f"{a} - {b}" if b else a, delta, ci) for a, b, delta, ci in differences]
        chart = {"src": data_uri(headline_chart(means, differences, split=split)),
                 "caption": f"Which model is better ({split} split): each model's mean AUROC (left) and each paired "
                            "difference a - b (right), with 95% patient-bootstrap CIs"}
    return {"sentences": sentences, "chart": chart, "strip": _strip(overlays, metrics, endpoint_url)}
