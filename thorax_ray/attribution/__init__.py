"""Attributions for the 14 findings: one method registry (`get_method(name)(model, **options)`),
the one-forward CAM fast path, compact uint8 heatmap storage and Wang et al. 2017 style boxes.

    method = get_method("cam")(model)
    result = method.attribute(images, features)       # maps (N, 14, h, w), logits (N, 14)
    values = encode_heatmaps(normalise_maps(result.maps))
    boxes = boxes_for_image(normalise_maps(result.maps)[0], width=1024, height=1024)
"""
from thorax_ray.attribution.base import (DEFAULT_IMAGE_METHOD, DEFAULT_METADATA_METHOD, Attribution,
                                         AttributionMethod, attribute, default_method_name, get_method, list_methods,
                                         register_method)
from thorax_ray.attribution.boxes import (BOX_STRUCT, BOXES_TYPE, DEFAULT_MAX_BOXES, DEFAULT_THRESHOLD,
                                          WANG_THRESHOLDS, boxes_for_batch, boxes_for_image)
from thorax_ray.attribution.cam import FastCAM, GradCAM, RawCAM, cam_weight, class_activation_maps
from thorax_ray.attribution.encode import (HEATMAP_METADATA_KEY, HEATMAP_SCHEMA_METADATA, decode_heatmaps,
                                           encode_heatmaps, normalise_maps)
from thorax_ray.attribution.geometry import centres_from_metadata, upsample_maps
from thorax_ray.attribution.gradients import IntegratedGradientsMaps, MetadataIntegratedGradients
from thorax_ray.attribution.occlusion import OcclusionMaps

__all__ = [
    "Attribution",
    "AttributionMethod",
    "BOXES_TYPE",
    "BOX_STRUCT",
    "DEFAULT_IMAGE_METHOD",
    "DEFAULT_MAX_BOXES",
    "DEFAULT_METADATA_METHOD",
    "DEFAULT_THRESHOLD",
    "FastCAM",
    "GradCAM",
    "RawCAM",
    "WANG_THRESHOLDS",
    "HEATMAP_METADATA_KEY",
    "HEATMAP_SCHEMA_METADATA",
    "attribute",
    "boxes_for_batch",
    "boxes_for_image",
    "cam_weight",
    "centres_from_metadata",
    "class_activation_maps",
    "decode_heatmaps",
    "default_method_name",
    "encode_heatmaps",
    "get_method",
    "list_methods",
    "normalise_maps",
    "register_method",
    "upsample_maps",
]
