"""The embedded demo dataset: generated on first use, reused afterwards."""
from __future__ import annotations

import json
import os
import shutil

from thorax_ray.synthetic.dataset import SyntheticConfig, write_preview, write_synthetic_dataset

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


def record_path(path: str) -> str:
    return os.path.normpath(path) + "_synthetic.json"


def ensure_demo_dataset(path: str = DEMO_DATA, *, images: int = DEMO_IMAGES, size: int = DEMO_SIZE, seed: int = 0,
                        difficulty: float = DEMO_DIFFICULTY) -> bool:
    """Generates the synthetic demo dataset in `path` unless it is already there; True when it generated.

    The generator settings are recorded beside the dataset; a dataset generated with other settings is
    generated again. A folder without that record (e.g. the real dataset) is used as it is."""
    wanted = {"images": images, "size": size, "seed": seed, "difficulty": difficulty}
    if os.path.exists(os.path.join(path, "Data_Entry_2017.csv")):
        if not os.path.exists(record_path(path)):
            return False
        with open(record_path(path)) as handle:
            recorded = json.load(handle)
        if recorded == wanted:
            return False
        print(f"[demo] {path} was generated with {recorded}; generating it again with {wanted}", flush=True)
        shutil.rmtree(path)
    print(f"[demo] generating {images} synthetic images of {size} px (difficulty {difficulty:g}) in {path} "
          "(first run only)", flush=True)
    config = SyntheticConfig(out=path, images=images, size=size, seed=seed, difficulty=difficulty)
    population = write_synthetic_dataset(config)
    preview = preview_path(path)
    write_preview(config, population, preview)
    with open(record_path(path), "w") as handle:
        json.dump(wanted, handle)
    print(f"[demo] contact sheet of the data: {preview}", flush=True)
    return True
