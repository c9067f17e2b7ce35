"""What produced each localization figure: Wang et al. 2017's protocol on the stored maps (and whether the maps
are at Wang's resolution), and the boxes as the scoring job wrote them; labels for every table row."""
from __future__ import annotations

from thorax_ray.attribution import WANG_THRESHOLDS
from thorax_ray.attribution.encode import encoding_levels


def _gate_text(gate: dict | None) -> str:
    gate = gate or {}
    if gate.get("kind") == "calibrated":
        return f"findings gated by the checkpoint's operating points ({gate.get('rule')}, chosen on validation)"
    if gate.get("kind") == "fixed":
        return f"findings gated at probability >= {gate.get('probability')}"
    if gate.get("kind") == "none":
        return "no probability gate"
    return f"probability gate {gate}" if gate else "probability gate unknown"


WANG_INPUT_SIZE = 1024  # Wang et al. 2017 localized on 1024 x 1024 inputs: 32x32 maps (ResNet-50, stride 32)


def wang_resolution_gaps(heatmap: dict) -> list[str]:
    """How stored heatmaps differ from those Wang et al. 2017 thresholded (raw CAM of a 1024-px input, not
    pooled, 256 levels so that 60 and 180 are cut exactly); empty when they do not."""
    gaps = []
    if heatmap.get("method") != "cam":
        gaps.append(f"{heatmap.get('method', 'unknown')} maps (Wang: raw CAM, --method cam)")
    size = heatmap.get("scored_image_size")
    if not size or int(size) < WANG_INPUT_SIZE:
        gaps.append(f"{size or 'unknown'} px input (Wang: {WANG_INPUT_SIZE})")
    if heatmap.get("pooling", "none") != "none":
        gaps.append("maps pooled (Wang: not pooled, --max-map-side 0)")
    if _levels(heatmap.get("encoding")) != "lossless":
        gaps.append(f"stored as {heatmap.get('encoding', 'unknown encoding')}, not lossless "
                    "(Wang: 8-bit, --heatmap-bits 8)")
    return gaps


def localization_protocols(heatmap: dict | None, boxes: dict | None) -> dict[str, dict]:
    """What produced each localization figure: Wang et al. 2017's protocol on the stored maps, and the
    boxes as the scoring job wrote them. Each: {"label", "method", "map", "thresholds", "regions", "gate"}."""
    heatmap, boxes = heatmap or {}, boxes or {}
    method = heatmap.get("method", "unknown method")
    shape = heatmap.get("shape") or []
    grid = f"{shape[-2]}x{shape[-1]}" if len(shape) >= 2 else "unknown size"
    centred = "receptive-field centres" if heatmap.get("cell_centres") else "equal-cell centres"
    gaps = wang_resolution_gaps(heatmap)
    thresholds = f"thresholds {' and '.join(str(t) for t in WANG_THRESHOLDS)} of 255, every region, no probability gate"
    wang = {"method": method, "map": grid, "thresholds": list(WANG_THRESHOLDS), "regions": "every", "gate": "none",
            "at_wang_resolution": not gaps,
            "label": (f"Wang et al. 2017 protocol at Wang's resolution: raw CAM maps {grid} ({centred}) of a "
                      f"{heatmap.get('scored_image_size')} px input, unpooled, 8-bit, {thresholds}" if not gaps else
                      f"Wang et al. 2017 protocol: {method} maps {grid} ({centred}), {thresholds}; "
                      f"not at Wang's resolution: {'; '.join(gaps)}")}
    scored = {"method": method, "map": grid, "thresholds": [boxes.get("threshold")],
              "regions": boxes.get("max_boxes_per_finding"), "gate": boxes.get("min_probability"),
              "label": (f"boxes as scored: {method} maps {grid}, threshold {boxes.get('threshold', '?')} of 255, "
                        f"at most {boxes.get('max_boxes_per_finding', '?')} regions, "
                        f"{_gate_text(boxes.get('min_probability'))}")}
    return {"wang2017": wang, "scored_boxes": scored}


def _levels(encoding: str | None) -> int | str | None:
    try:
        return encoding_levels(encoding) if encoding else None
    except ValueError:
        return None
