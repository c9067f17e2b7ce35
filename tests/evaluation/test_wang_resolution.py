"""The localization row labelled as Wang et al. 2017's protocol says whether the maps are at Wang's resolution
(raw CAM of a 1024-px input, unpooled, lossless levels) and, when not, how they differ."""
from thorax_ray.evaluation.protocols import localization_protocols, wang_resolution_gaps

WANG = {"method": "cam", "shape": [14, 32, 32], "encoding": "planar8", "scored_image_size": 1024,
        "feature_map": [32, 32], "pooling": "none", "cell_centres": {"rows": [0.5], "cols": [0.5]}}


def test_maps_like_wangs_get_the_row_at_wangs_resolution():
    protocol = localization_protocols(WANG, None)["wang2017"]
    assert wang_resolution_gaps(WANG) == [] and protocol["at_wang_resolution"]
    assert protocol["label"] == ("Wang et al. 2017 protocol at Wang's resolution: raw CAM maps 32x32 "
                                 "(receptive-field centres) of a 1024 px input, unpooled, 8-bit, thresholds 60 and "
                                 "180 of 255, every region, no probability gate")


def test_every_difference_is_named():
    demo = {"method": "fast_cam", "shape": [14, 16, 16], "encoding": "planar5", "scored_image_size": 128,
            "feature_map": [16, 16], "pooling": "none"}
    assert wang_resolution_gaps(demo) == ["fast_cam maps (Wang: raw CAM, --method cam)",
                                          "128 px input (Wang: 1024)",
                                          "stored as planar5, not lossless (Wang: 8-bit, --heatmap-bits 8)"]
    pooled = dict(WANG, shape=[14, 16, 16], pooling="adaptive average pooling of the 32x32 maps to 16x16")
    protocol = localization_protocols(pooled, None)["wang2017"]
    assert not protocol["at_wang_resolution"]
    assert protocol["label"].endswith("not at Wang's resolution: maps pooled (Wang: not pooled, --max-map-side 0)")
    assert wang_resolution_gaps({}) == ["unknown maps (Wang: raw CAM, --method cam)", "unknown px input (Wang: 1024)",
                                        "stored as unknown encoding, not lossless (Wang: 8-bit, --heatmap-bits 8)"]
