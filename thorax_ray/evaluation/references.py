"""Published results the evaluation sets beside ours (`../shared/ANCHORS.md`), each column named with its
data and split, and the kind of split each used (`REFERENCE_SPLIT`, thorax_ray.data.splits.SPLIT_KINDS): the
report and the terminal table mark which references used the same kind of split as the evaluated run."""
from __future__ import annotations

MEAN_ROW = "mean"

WANG_2017 = "Wang 2017 ResNet-50 (real data, official split)"
CHEXNET_2017 = "CheXNet 2017 DenseNet-121 (real data, random patient split 70/10/20)"
CHEXNET_REIMPL = "CheXNet PyTorch reimplementation (real data, random split)"

REFERENCE_AUROC: dict[str, dict[str, float]] = {
    WANG_2017: {
        "Atelectasis": 0.7003, "Cardiomegaly": 0.8100, "Effusion": 0.7585, "Infiltration": 0.6614,
        "Mass": 0.6933, "Nodule": 0.6687, "Pneumonia": 0.6580, "Pneumothorax": 0.7993,
        "Consolidation": 0.7032, "Edema": 0.8052, "Emphysema": 0.8330, "Fibrosis": 0.7859,
        "Pleural_Thickening": 0.6835, "Hernia": 0.8717, MEAN_ROW: 0.745,
    },
    CHEXNET_2017: {
        "Atelectasis": 0.8094, "Cardiomegaly": 0.9248, "Effusion": 0.8638, "Infiltration": 0.7345,
        "Mass": 0.8676, "Nodule": 0.7802, "Pneumonia": 0.7680, "Pneumothorax": 0.8887,
        "Consolidation": 0.7901, "Edema": 0.8878, "Emphysema": 0.9371, "Fibrosis": 0.8047,
        "Pleural_Thickening": 0.8062, "Hernia": 0.9164, MEAN_ROW: 0.841,
    },
    CHEXNET_REIMPL: {
        "Atelectasis": 0.8294, "Cardiomegaly": 0.9165, "Effusion": 0.8870, "Infiltration": 0.7143,
        "Mass": 0.8597, "Nodule": 0.7873, "Pneumonia": 0.7745, "Pneumothorax": 0.8726,
        "Consolidation": 0.8142, "Edema": 0.8932, "Emphysema": 0.9254, "Fibrosis": 0.8304,
        "Pleural_Thickening": 0.7831, "Hernia": 0.9104, MEAN_ROW: 0.843,
    },
}
"""Published per-class AUROC (ANCHORS.md), column name (saying data and split) -> finding -> AUROC."""

REFERENCE_SPLIT: dict[str, str] = {WANG_2017: "official", CHEXNET_2017: "random", CHEXNET_REIMPL: "random"}
"""Column of REFERENCE_AUROC -> the kind of split its numbers are on ("official": NIH's train_val/test lists;
"random": a random patient split, CheXNet's 70/10/20)."""

REFERENCE_LOCALIZATION_LABEL = "Wang 2017 ResNet-50 (real data, official boxes)"
REFERENCE_LOCALIZATION_SPLIT = "official"  # every boxed image is in NIH's official test list
REFERENCE_LOCALIZATION_IOBB: dict[str, dict[str, float]] = {
    "0.1": {"Atelectasis": 0.622, "Cardiomegaly": 1.000, "Effusion": 0.797, "Infiltration": 0.911,
            "Mass": 0.588, "Nodule": 0.152, "Pneumonia": 0.858, "Pneumothorax": 0.520},
    "0.25": {"Atelectasis": 0.394, "Cardiomegaly": 0.986, "Effusion": 0.634, "Infiltration": 0.797,
             "Mass": 0.459, "Nodule": 0.051, "Pneumonia": 0.708, "Pneumothorax": 0.337},
    "0.5": {"Atelectasis": 0.194, "Cardiomegaly": 0.945, "Effusion": 0.418, "Infiltration": 0.650,
            "Mass": 0.306, "Nodule": 0.000, "Pneumonia": 0.483, "Pneumothorax": 0.265},
    "0.75": {"Atelectasis": 0.089, "Cardiomegaly": 0.815, "Effusion": 0.229, "Infiltration": 0.439,
             "Mass": 0.165, "Nodule": 0.000, "Pneumonia": 0.292, "Pneumothorax": 0.174},
    "0.9": {"Atelectasis": 0.072, "Cardiomegaly": 0.651, "Effusion": 0.137, "Infiltration": 0.358,
            "Mass": 0.094, "Nodule": 0.000, "Pneumonia": 0.233, "Pneumothorax": 0.122},
}
"""Wang et al. 2017 localization accuracy, T(IoBB) (string key) -> finding -> accuracy (ANCHORS.md)."""
