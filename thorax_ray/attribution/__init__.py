"""Attributions for the 14 findings: one method registry (`get_method(name)(model, **options)`),
the one-forward CAM fast path, compact uint8 heatmap storage and Wang et al. 2017 style boxes.

    method = get_method("cam")(model)
    result = method.attribute(images, features)       # maps (N, 14, h, w), logits (N, 14)
    values = encode_heatmaps(normalise_maps(result.maps))
    boxes = boxes_for_image(normalise_maps(result.maps)[0], width=1024, height=1024)
"""
from thorax_ray.attribution import cam, gradients, occlusion  # noqa: F401 (imported for what they register)
from thorax_ray.attribution.base import default_method_name, get_method, list_methods
from thorax_ray.attribution.boxes import (BOXES_TYPE, DEFAULT_MAX_BOXES, DEFAULT_THRESHOLD, WANG_THRESHOLDS,
                                          boxes_for_batch, boxes_for_image)
from thorax_ray.attribution.encode import (DEFAULT_HEATMAP_BITS, HEATMAP_METADATA_KEY, HEATMAP_SCHEMA_METADATA,
                                           PLANAR_BITS, decode_heatmaps, encode_heatmaps, normalise_maps)
from thorax_ray.attribution.geometry import centres_from_metadata, upsample_maps

__all__ = [
    "BOXES_TYPE",
    "DEFAULT_HEATMAP_BITS",
    "DEFAULT_MAX_BOXES",
    "DEFAULT_THRESHOLD",
    "HEATMAP_METADATA_KEY",
    "HEATMAP_SCHEMA_METADATA",
    "PLANAR_BITS",
    "WANG_THRESHOLDS",
    "boxes_for_batch",
    "boxes_for_image",
    "centres_from_metadata",
    "decode_heatmaps",
    "default_method_name",
    "encode_heatmaps",
    "get_method",
    "list_methods",
    "normalise_maps",
    "upsample_maps",
]
