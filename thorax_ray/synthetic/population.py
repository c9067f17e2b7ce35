"""Samples the metadata of a synthetic NIH-like population: patients, follow-ups, ages, sex, view
position and co-occurring labels, following the real statistics of NIH_FORMAT.md closely enough that
metadata carries real but weak signal (AP films are sicker, Hernia patients older, ...)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from thorax_ray.labels import FINDINGS, NUM_FINDINGS, format_finding_labels

# finding: (prevalence, P(AP), P(male), mean age, mean follow-up #) from the real Data_Entry_2017.
REAL_STATISTICS: dict[str, tuple[float, float, float, float, float]] = {
    "Atelectasis": (0.1031, 0.50, 0.60, 50.2, 10.2),
    "Cardiomegaly": (0.0248, 0.44, 0.47, 47.0, 10.8),
    "Effusion": (0.1188, 0.51, 0.56, 49.5, 13.7),
    "Infiltration": (0.1774, 0.53, 0.57, 46.0, 13.4),
    "Mass": (0.0516, 0.38, 0.61, 48.5, 8.9),
    "Nodule": (0.0565, 0.34, 0.58, 49.3, 8.5),
    "Pneumonia": (0.0128, 0.56, 0.59, 44.4, 14.5),
    "Pneumothorax": (0.0473, 0.36, 0.51, 46.3, 15.5),
    "Consolidation": (0.0416, 0.67, 0.57, 46.4, 16.7),
    "Edema": (0.0205, 0.88, 0.52, 45.1, 15.4),
    "Emphysema": (0.0224, 0.40, 0.64, 50.1, 13.1),
    "Fibrosis": (0.0150, 0.16, 0.54, 52.5, 7.5),
    "Pleural_Thickening": (0.0302, 0.29, 0.60, 50.2, 11.6),
    "Hernia": (0.0020, 0.15, 0.42, 63.0, 3.6),
}
NO_FINDING_AP, MALE_FRACTION, MEAN_AGE, AGE_SD = 0.35, 0.565, 45.5, 16.5
NO_FINDING_FOLLOW_UP = 6.0
FLUID = ("Effusion", "Infiltration", "Atelectasis", "Consolidation", "Edema", "Pneumonia")
IMPOSSIBLE_AGE_RATE = 16 / 112_120
PIXEL_SPACINGS = (0.143, 0.139, 0.168, 0.171, 0.194)


def _logit(p: float | np.ndarray) -> float | np.ndarray:
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class PopulationConfig:
    images: int
    seed: int = 0
    max_images_per_patient: int = 40


def _patients(rng: np.random.Generator, images: int, max_per_patient: int) -> pd.DataFrame:
    """Patients with a frailty latent; frail patients come back more often."""
    rows, pid, total = [], 0, 0
    while total < images:
        pid += 1
        frailty = rng.standard_normal()
        count = 1 + int(min(max_per_patient - 1, np.exp(0.15 + 1.35 * frailty + 0.3 * rng.standard_normal())))
        rows.append((pid, rng.random() < MALE_FRACTION, float(np.clip(rng.normal(MEAN_AGE - 2, AGE_SD), 1, 92)), count, frailty))
        total += count
    frame = pd.DataFrame(rows, columns=["patient_id", "male", "base_age", "count", "frailty"])
    excess = int(frame["count"].sum()) - images
    frame.loc[frame.index[-1], "count"] -= excess
    return frame[frame["count"] > 0]


def _images(patients: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    repeated = patients.loc[patients.index.repeat(patients["count"])].reset_index(drop=True)
    repeated["follow_up"] = repeated.groupby("patient_id").cumcount()
    repeated["age"] = repeated["base_age"] + repeated["follow_up"] * rng.uniform(0.05, 0.4, len(repeated))
    return repeated


def _label_logits_without_intercept(images: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Per-image, per-finding log-odds from the covariates (intercepts are calibrated separately)."""
    n = len(images)
    age = ((images["age"] - MEAN_AGE) / AGE_SD).to_numpy()[:, None]
    male = (images["male"].to_numpy(dtype=float) - MALE_FRACTION)[:, None]
    follow = (np.log1p(images["follow_up"].to_numpy()) - 1.2)[:, None]
    frailty = images["frailty"].to_numpy()[:, None]
    stats = np.array([REAL_STATISTICS[f] for f in FINDINGS])
    b_age = (stats[:, 3] - MEAN_AGE) / AGE_SD * 1.2
    b_male = _logit(stats[:, 2]) - _logit(MALE_FRACTION)
    b_follow = np.log(stats[:, 4] / NO_FINDING_FOLLOW_UP) * 0.45
    fluid = np.array([f in FLUID for f in FINDINGS], dtype=float)
    sickness = rng.standard_normal((n, 1))
    fluid_overload = rng.standard_normal((n, 1))
    return (
        age * b_age + male * b_male + follow * b_follow + 0.2 * frailty
        + 0.5 * sickness + 0.7 * fluid * fluid_overload
    )


@lru_cache(maxsize=4)
def _intercepts(max_per_patient: int) -> np.ndarray:
    """Intercepts that make each finding's prevalence match the real one on a large reference sample."""
    rng = np.random.default_rng(20170101)
    images = _images(_patients(rng, 60_000, max_per_patient), rng)
    logits = _label_logits_without_intercept(images, rng)
    targets = np.array([REAL_STATISTICS[f][0] for f in FINDINGS])
    lo, hi = np.full(NUM_FINDINGS, -20.0), np.full(NUM_FINDINGS, 5.0)
    for _ in range(50):
        mid = (lo + hi) / 2
        prevalence = (1 / (1 + np.exp(-(logits + mid)))).mean(axis=0)
        lo, hi = np.where(prevalence < targets, mid, lo), np.where(prevalence < targets, hi, mid)
    return (lo + hi) / 2


def sample_population(config: PopulationConfig) -> pd.DataFrame:
    """Returns one row per image with the Data_Entry_2017 fields (normalised) and a 14-column label matrix.

    Columns: image_index, finding_labels, follow_up, patient_id, age (int years, a few impossible on
    purpose), sex, view_position, original_width, original_height, pixel_spacing, labels (array)."""
    rng = np.random.default_rng([config.seed, 1])
    images = _images(_patients(rng, config.images, config.max_images_per_patient), rng)
    logits = _label_logits_without_intercept(images, rng) + _intercepts(config.max_images_per_patient)
    labels = (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.uint8)

    ap_logit = np.full(len(images), _logit(NO_FINDING_AP))
    finding_ap = _logit(np.array([REAL_STATISTICS[f][1] for f in FINDINGS]))
    present = labels.astype(bool)
    mean_finding_ap = (present * finding_ap).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    ap_logit = np.where(present.any(axis=1), mean_finding_ap, ap_logit)
    view = np.where(rng.random(len(images)) < 1 / (1 + np.exp(-ap_logit)), "AP", "PA")

    age = np.round(images["age"].to_numpy()).astype(int)
    impossible = rng.random(len(images)) < IMPOSSIBLE_AGE_RATE
    age[impossible] = rng.choice([148, 149, 150, 151, 152, 153, 154, 155, 411, 412, 413, 414], impossible.sum())

    width = np.clip(rng.normal(2500, 350, len(images)), 1143, 3827).astype(int)
    height = np.clip(width + rng.normal(0, 250, len(images)), 966, 4715).astype(int)
    spacing = rng.choice(PIXEL_SPACINGS, len(images), p=[0.6, 0.15, 0.1, 0.1, 0.05])
    return pd.DataFrame({
        "image_index": [f"{p:08d}_{k:03d}.png" for p, k in zip(images["patient_id"], images["follow_up"])],
        "finding_labels": [format_finding_labels(row) for row in labels],
        "follow_up": images["follow_up"].to_numpy(),
        "patient_id": images["patient_id"].to_numpy(),
        "age": age,
        "sex": np.where(images["male"].to_numpy(dtype=bool), "M", "F"),
        "view_position": view,
        "original_width": width,
        "original_height": height,
        "pixel_spacing": spacing,
        "labels": list(labels),
    })
