"""The embedded demo dataset: generated on first use, reused afterwards."""
from __future__ import annotations

import json
import os

from thorax_ray import console
from thorax_ray.synthetic.dataset import (SyntheticConfig, recorded_settings, write_preview, write_record,
                                          write_synthetic_dataset)

DEMO_DATA = "data/demo"
DEMO_IMAGES = 6000  # enough positives of the small findings for their maps to localize (3,000: Mass 0.0 at IoBB 0.5)
DEMO_SIZE = 256
# Signatures at twice the contrast of difficulty 1 (NIH-like) and no label noise, so that a small CNN trained
# for a few minutes on 2 CPU cores learns most findings, not only the large ones. At difficulty 1 the same
# demo gave mean AUROC 0.70 (CNN) vs 0.65 (MLP), a difference within its confidence interval.
DEMO_DIFFICULTY = 0.0


def preview_path(path: str) -> str:
    """The contact sheet sits beside the dataset, not in it (it would be an image without a metadata row)."""
    return os.path.normpath(path) + "_preview.png"


def legacy_record_path(path: str) -> str:
    """Where earlier versions recorded the settings (beside the dataset, written after it was complete)."""
    return os.path.normpath(path) + "_synthetic.json"


def _adopt_legacy_record(config: SyntheticConfig) -> dict | None:
    """The settings of a dataset recorded by an earlier version (only after it was complete), moved into
    the dataset as its RECORD_FILE when they are this config's, so the dataset is not made again; None
    when there is no such record. Other settings are returned as they are (the dataset is remade)."""
    legacy = legacy_record_path(config.out)
    if not os.path.exists(legacy):
        return None
    with open(legacy) as handle:
        recorded = json.load(handle)
    settings = config.settings()
    same = recorded == {key: settings[key] for key in ("images", "size", "seed", "difficulty")}
    if same and os.path.exists(os.path.join(config.out, "Data_Entry_2017.csv")):
        write_record(config, config.out)
        os.remove(legacy)
        return settings
    return recorded


def ensure_demo_dataset(path: str = DEMO_DATA, *, images: int = DEMO_IMAGES, size: int = DEMO_SIZE, seed: int = 0,
                        difficulty: float = DEMO_DIFFICULTY) -> bool:
    """Generates the synthetic demo dataset in `path` unless it is already there; True when it generated.

    A complete synthetic dataset records its settings inside it (`recorded_settings`); one generated
    with other settings is generated again, and an interrupted generation never leaves a folder at
    `path` (see `write_synthetic_dataset`). A dataset folder without that record (e.g. the real
    dataset) is used as it is; any other non-empty folder is an error, never overwritten."""
    config = SyntheticConfig(out=path, images=images, size=size, seed=seed, difficulty=difficulty)
    wanted = config.settings()
    recorded = recorded_settings(path) or _adopt_legacy_record(config)
    if recorded == wanted:
        return False
    if recorded is None and os.path.exists(os.path.join(path, "Data_Entry_2017.csv")):
        return False
    if recorded is not None:
        console.say("demo", f"{path} was generated with {recorded}; generating it again with {wanted}")
    console.say("demo", f"generating {images} synthetic images of {size} px (difficulty {difficulty:g}) in {path} "
                        "(first run only)")
    population = write_synthetic_dataset(config, replace=recorded is not None)
    if os.path.exists(legacy_record_path(path)):
        os.remove(legacy_record_path(path))
    preview = preview_path(path)
    write_preview(config, population, preview)
    console.say("demo", f"contact sheet of the data: {preview}")
    return True
