"""Writes a synthetic dataset in the exact layout of the full NIH/Kaggle ChestX-ray14 release:
Data_Entry_2017.csv, BBox_List_2017.csv, train_val_list.txt, test_list.txt, images_001..012/images/,
plus the generator's settings record `thorax_ray_synthetic.json` at its root, which marks the data as
synthetic for the out-of-distribution guard (thorax_ray.origin)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from thorax_ray.labels import FINDINGS
from thorax_ray.locate import SYNTHETIC_RECORD
from thorax_ray.metadata import BBOX_HEADER, DATA_ENTRY_HEADER
from thorax_ray.synthetic.population import PopulationConfig, sample_population
from thorax_ray.synthetic.render import BOXED_FINDINGS, Patient, render_chest_xray

log = logging.getLogger(__name__)

IMAGE_FOLDERS = 12
LABEL_NOISE_PER_DIFFICULTY = 0.05  # share of labelled findings whose signature is not drawn, per unit difficulty


@dataclass(frozen=True)
class SyntheticConfig:
    out: str
    images: int = 2000
    size: int = 1024
    seed: int = 0
    difficulty: float = 1.0
    test_fraction: float = 0.2
    workers: int = 0  # 0 = one per CPU core
    metadata_only: bool = False  # write the CSVs and lists but no PNGs


@dataclass(frozen=True)
class RenderedImage:
    image_index: str
    folder: str
    boxes: dict[str, tuple[int, int, int, int]]


def image_seed(seed: int, image_index: str) -> list[int]:
    """Each image owns its RNG, so output does not depend on worker count or scheduling order."""
    digest = hashlib.sha256(image_index.encode()).digest()
    return [seed, int.from_bytes(digest[:8], "big")]


def drawn_findings(labels: np.ndarray, rng: np.random.Generator, difficulty: float) -> list[str]:
    """The findings whose signature is drawn: the labelled ones, less a few (report-mining label noise)."""
    noise = LABEL_NOISE_PER_DIFFICULTY * difficulty
    return [f for f, on in zip(FINDINGS, labels) if on and rng.random() >= noise]


def render_row(row: dict, size: int, difficulty: float, seed: int) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(image_seed(seed, row["image_index"]))
    findings = drawn_findings(row["labels"], rng, difficulty)
    age = float(row["age"]) if 0 <= row["age"] <= 120 else 50.0
    patient = Patient(sex=row["sex"], age_years=age, view_position=row["view_position"])
    return render_chest_xray(findings, patient, size, rng, difficulty=difficulty)


def _render_chunk(rows: list[dict], root: str, size: int, difficulty: float, seed: int) -> list[RenderedImage]:
    from PIL import Image

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    done = []
    for row in rows:
        pixels, boxes = render_row(row, size, difficulty, seed)
        path = os.path.join(root, row["folder"], "images", row["image_index"])
        Image.fromarray(pixels, mode="L").save(path, compress_level=4)
        done.append(RenderedImage(row["image_index"], row["folder"], boxes))
    return done


def assign_folders(count: int) -> list[str]:
    per_folder = max(1, math.ceil(count / IMAGE_FOLDERS))
    return [f"images_{i // per_folder + 1:03d}" for i in range(count)]


def write_synthetic_dataset(config: SyntheticConfig, *, progress: bool = True) -> pd.DataFrame:
    """Generates the dataset under `config.out` and returns the population (one row per image)."""
    started = time.monotonic()
    population = sample_population(PopulationConfig(images=config.images, seed=config.seed))
    population["folder"] = assign_folders(len(population))
    os.makedirs(config.out, exist_ok=True)
    _write_record(config, os.path.join(config.out, SYNTHETIC_RECORD))
    _write_data_entry(population, os.path.join(config.out, "Data_Entry_2017.csv"))
    test_patients = _test_patients(population, config)
    is_test = population["patient_id"].isin(test_patients)
    _write_list(population.loc[~is_test, "image_index"], os.path.join(config.out, "train_val_list.txt"))
    _write_list(population.loc[is_test, "image_index"], os.path.join(config.out, "test_list.txt"))
    if config.metadata_only:
        _write_boxes([], os.path.join(config.out, "BBox_List_2017.csv"))
        return population

    for folder in sorted(set(population["folder"])):
        os.makedirs(os.path.join(config.out, folder, "images"), exist_ok=True)
    rows = population[["image_index", "folder", "labels", "age", "sex", "view_position"]].to_dict("records")
    workers = config.workers or os.cpu_count() or 1
    chunk = max(1, min(64, math.ceil(len(rows) / (workers * 4))))
    chunks = [rows[i:i + chunk] for i in range(0, len(rows), chunk)]
    rendered: list[RenderedImage] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_render_chunk, c, config.out, config.size, config.difficulty, config.seed) for c in chunks]
        for future in futures:
            rendered.extend(future.result())
            if progress and (len(rendered) % max(1, len(rows) // 10) < chunk or len(rendered) == len(rows)):
                elapsed = time.monotonic() - started
                print(f"  rendered {len(rendered)}/{len(rows)} images ({len(rendered) / max(elapsed, 1e-9):.0f}/s)", flush=True)
    boxed_test = set(population.loc[is_test, "image_index"])
    _write_boxes([r for r in rendered if r.image_index in boxed_test], os.path.join(config.out, "BBox_List_2017.csv"))
    return population


def _write_record(config: SyntheticConfig, path: str) -> None:
    """The generator settings: what made this dataset (and that it is synthetic)."""
    from thorax_ray import __version__

    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("out", "workers")}
    with open(path, "w") as handle:
        json.dump({"generator": "thorax_ray.synthetic", "thorax_ray": __version__, "data_origin": "synthetic",
                   "settings": settings}, handle, indent=2)


def _test_patients(population: pd.DataFrame, config: SyntheticConfig) -> set[int]:
    patients = np.array(sorted(population["patient_id"].unique()))
    rng = np.random.default_rng([config.seed, 2])
    return set(patients[rng.random(len(patients)) < config.test_fraction].tolist())


def _write_data_entry(population: pd.DataFrame, path: str) -> None:
    """The v2020 revision's header and format (no trailing comma, integer ages)."""
    with open(path, "w", newline="") as handle:
        handle.write(DATA_ENTRY_HEADER + "\n")
        for r in population.itertuples(index=False):
            handle.write(
                f"{r.image_index},{r.finding_labels},{r.follow_up},{r.patient_id},{r.age},{r.sex},{r.view_position},"
                f"{r.original_width},{r.original_height},{r.pixel_spacing:.3f},{r.pixel_spacing:.3f}\n"
            )


def _write_list(names: pd.Series, path: str) -> None:
    with open(path, "w") as handle:
        handle.write("".join(f"{name}\n" for name in sorted(names)))


def _write_boxes(rendered: list[RenderedImage], path: str) -> None:
    """BBox_List_2017.csv: real header, `Infiltrate` spelling, boxes in pixels of the written image."""
    spelling = {"Infiltration": "Infiltrate"}
    with open(path, "w", newline="") as handle:
        handle.write(BBOX_HEADER + "\n")
        for image in sorted(rendered, key=lambda r: r.image_index):
            for finding in BOXED_FINDINGS:
                if finding in image.boxes:
                    x, y, w, h = image.boxes[finding]
                    handle.write(f"{image.image_index},{spelling.get(finding, finding)},{x:.6f},{y:.6f},{w:.6f},{h:.6f}\n")


def pick_preview_rows(population: pd.DataFrame, count: int = 16) -> pd.DataFrame:
    """A varied sample for the contact sheet: each boxed finding first, then other findings, then normal."""
    chosen: list[int] = []
    for finding in (*BOXED_FINDINGS, *[f for f in FINDINGS if f not in BOXED_FINDINGS], None):
        if len(chosen) >= count:
            break
        labels = population["finding_labels"]
        mask = (labels == "No Finding") if finding is None else labels.str.split("|").apply(lambda names: finding in names)
        candidates = [i for i in population.index[mask] if i not in chosen]
        chosen.extend(candidates[: 1 if finding else count - len(chosen)])
    return population.loc[chosen[:count]]


def write_preview(config: SyntheticConfig, population: pd.DataFrame, path: str, count: int = 16) -> None:
    """Contact sheet of `count` generated images with their labels and ground-truth boxes drawn."""
    from thorax_ray.synthetic.preview import write_contact_sheet

    rows = pick_preview_rows(population, count)
    images, titles, boxes = [], [], []
    for row in rows.to_dict("records"):
        pixels, row_boxes = render_row(row, config.size, config.difficulty, config.seed)
        images.append(pixels)
        boxes.append(row_boxes)
        titles.append(f"{row['image_index']} {row['view_position']}\n{row['finding_labels'].replace('|', ', ')}")
    write_contact_sheet(images, titles, boxes, path)
