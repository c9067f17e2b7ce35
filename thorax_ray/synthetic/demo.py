"""The embedded demo dataset: generated on first use, reused afterwards."""
from __future__ import annotations

import os

from thorax_ray.synthetic.dataset import SyntheticConfig, write_preview, write_synthetic_dataset

DEMO_DATA = "data/demo"
DEMO_IMAGES = 2000
DEMO_SIZE = 256
# Signatures 1.4x the contrast of difficulty 1 (and half its label noise), so a small CNN trained for a few
# minutes on 2 CPU cores learns the small findings too, not only the large ones.
DEMO_DIFFICULTY = 0.5


def preview_path(path: str) -> str:
    """The contact sheet sits beside the dataset, not in it (it would be an image without a metadata row)."""
    return os.path.normpath(path) + "_preview.png"


def ensure_demo_dataset(path: str = DEMO_DATA, *, images: int = DEMO_IMAGES, size: int = DEMO_SIZE, seed: int = 0,
                        difficulty: float = DEMO_DIFFICULTY) -> str:
    """Generates the synthetic demo dataset in `path` unless it is already there; returns `path`."""
    if os.path.exists(os.path.join(path, "Data_Entry_2017.csv")):
        return path
    print(f"[demo] generating {images} synthetic images of {size} px (difficulty {difficulty:g}) in {path} "
          "(first run only)", flush=True)
    config = SyntheticConfig(out=path, images=images, size=size, seed=seed, difficulty=difficulty)
    population = write_synthetic_dataset(config)
    preview = preview_path(path)
    write_preview(config, population, preview)
    print(f"[demo] contact sheet of the data: {preview}", flush=True)
    return path
