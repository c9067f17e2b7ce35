"""Writes a synthetic dataset in the exact layout of the full NIH/Kaggle ChestX-ray14 release:
Data_Entry_2017.csv, BBox_List_2017.csv, train_val_list.txt, test_list.txt, images_001..012/images/,
plus the generator's settings record `thorax_ray_synthetic.json` at its root, which marks the data as
synthetic for the out-of-distribution guard (thorax_ray.data.origin)."""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from thorax_ray import __version__, console
from thorax_ray.data.locate import SYNTHETIC_RECORD
from thorax_ray.data.nih_csv import BBOX_HEADER, DATA_ENTRY_HEADER
from thorax_ray.interrupts import leave_signals_to_parent
from thorax_ray.labels import FINDINGS
from thorax_ray.synthetic.population import PopulationConfig, sample_population
from thorax_ray.synthetic.preview import write_contact_sheet
from thorax_ray.synthetic.render import (BOXED_FINDINGS, MAX_DIFFICULTY, MIN_DIFFICULTY, MIN_SIZE, Patient,
                                         render_chest_xray)

log = logging.getLogger(__name__)

IMAGE_FOLDERS = 12
LABEL_NOISE_PER_DIFFICULTY = 0.05  # share of labelled findings whose signature is not drawn, per unit difficulty
MAX_SIZE = 4096
RECORD_FILE = SYNTHETIC_RECORD  # the generator's settings, written last: a folder with it is a complete dataset
STAGING_MARK = ".partial-"  # <parent>/.<name>.partial-<pid>: where a generation writes before it is complete


class SyntheticError(ValueError):
    """Bad generator settings, or an output folder that holds something else; the message says which."""


@dataclass(frozen=True)
class SyntheticConfig:
    out: str
    images: int = 2000
    size: int = 1024
    seed: int = 0
    difficulty: float = 1.0  # 0 = obvious findings, 1 = NIH-like (a good CNN is not perfect), 2 = very subtle
    test_fraction: float = 0.2
    workers: int = 0  # 0 = one per CPU core
    metadata_only: bool = False  # write the CSVs and lists but no PNGs

    def __post_init__(self) -> None:
        """Every setting checked before anything is written."""
        checks = (
            (self.images >= 1, f"images must be >= 1, got {self.images}"),
            (MIN_SIZE <= self.size <= MAX_SIZE, f"size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {self.size}"),
            (math.isfinite(self.difficulty) and MIN_DIFFICULTY <= self.difficulty <= MAX_DIFFICULTY,
             f"difficulty must be between {MIN_DIFFICULTY:g} and {MAX_DIFFICULTY:g}, got {self.difficulty}"),
            (0 <= self.test_fraction < 1, f"test_fraction must be in [0, 1), got {self.test_fraction}"),
            (self.workers >= 0, f"workers must be >= 0 (0: one per CPU core), got {self.workers}"),
        )
        for ok, message in checks:
            if not ok:
                raise SyntheticError(f"bad synthetic dataset settings: {message}")

    def settings(self) -> dict:
        """What decides the generated files (not where they go, nor how many processes make them)."""
        return {"images": self.images, "size": self.size, "seed": self.seed, "difficulty": self.difficulty,
                "test_fraction": self.test_fraction, "metadata_only": self.metadata_only}


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


def _render_chunk(rows: list[dict], *, root: str, size: int, difficulty: float, seed: int) -> list[RenderedImage]:
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


def recorded_settings(out: str) -> dict | None:
    """The settings of the complete synthetic dataset in `out` (its RECORD_FILE), or None: no such
    folder, or a folder this generator did not complete (a real dataset, anything else)."""
    try:
        with open(os.path.join(out, RECORD_FILE)) as handle:
            return json.load(handle).get("settings")
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, AttributeError):
        return None


def write_synthetic_dataset(config: SyntheticConfig, *, progress: bool = True, replace: bool = False) -> pd.DataFrame:
    """Generates the dataset into `config.out` and returns the population (one row per image).

    Everything is written to a staging folder beside `config.out`, RECORD_FILE last, and renamed into
    place only when complete, so `config.out` holds a whole dataset or what it held before. On any
    exception (an error, Ctrl-C, SIGTERM raised as `thorax_ray.interrupts.Interrupted`) the worker
    processes are stopped and the staging folder is removed before the exception goes on.
    `config.out` must be missing or an empty folder unless `replace` (its content is then replaced)."""
    out = os.path.normpath(config.out)
    if not replace and os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        recorded = recorded_settings(out)
        what = (f"a synthetic dataset made with other settings ({recorded})" if recorded is not None
                else "files that are not a complete synthetic dataset")
        raise SyntheticError(f"{config.out} already holds {what}; choose another folder or remove it first")
    population = sample_population(PopulationConfig(images=config.images, seed=config.seed))
    population["folder"] = assign_folders(len(population))
    _remove_abandoned_staging(out)
    staging = f"{os.path.join(os.path.dirname(out), '.' + os.path.basename(out))}{STAGING_MARK}{os.getpid()}"
    try:
        _write_files(population, config, staging, progress=progress)
        write_record(config, staging)
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return population


def _write_files(population: pd.DataFrame, config: SyntheticConfig, root: str, *, progress: bool) -> None:
    os.makedirs(root)
    _write_data_entry(population, os.path.join(root, "Data_Entry_2017.csv"))
    test_patients = _test_patients(population, config)
    is_test = population["patient_id"].isin(test_patients)
    _write_list(population.loc[~is_test, "image_index"], os.path.join(root, "train_val_list.txt"))
    _write_list(population.loc[is_test, "image_index"], os.path.join(root, "test_list.txt"))
    if config.metadata_only:
        _write_boxes([], os.path.join(root, "BBox_List_2017.csv"))
        return
    for folder in sorted(set(population["folder"])):
        os.makedirs(os.path.join(root, folder, "images"))
    rendered = _render_all(population, config, root, progress=progress)
    boxed_test = set(population.loc[is_test, "image_index"])
    _write_boxes([r for r in rendered if r.image_index in boxed_test], os.path.join(root, "BBox_List_2017.csv"))


def _render_all(population: pd.DataFrame, config: SyntheticConfig, root: str, *, progress: bool) -> list[RenderedImage]:
    """Renders every image with a process pool; on any exception the pool is terminated (its workers
    ignore Ctrl-C and leave it to this process) before the exception goes on."""
    started = time.monotonic()
    rows = population[["image_index", "folder", "labels", "age", "sex", "view_position"]].to_dict("records")
    workers = config.workers or os.cpu_count() or 1
    chunk = max(1, min(64, math.ceil(len(rows) / (workers * 4))))
    chunks = [rows[i:i + chunk] for i in range(0, len(rows), chunk)]
    render = functools.partial(_render_chunk, root=root, size=config.size, difficulty=config.difficulty,
                               seed=config.seed)
    rendered: list[RenderedImage] = []
    # Workers forked from a fresh server process, not from this one: forking a process whose Ray (gRPC)
    # threads are running (a driver or a test session with Ray up) can leave its Ray client hung for good.
    context = multiprocessing.get_context("forkserver")
    pool = context.Pool(min(workers, len(chunks)), initializer=leave_signals_to_parent)
    try:
        for done in pool.imap(render, chunks):
            rendered.extend(done)
            if progress and (len(rendered) % max(1, len(rows) // 10) < chunk or len(rendered) == len(rows)):
                elapsed = time.monotonic() - started
                console.line(f"  rendered {len(rendered)}/{len(rows)} images "
                             f"({len(rendered) / max(elapsed, 1e-9):.0f}/s)")
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    return rendered


def _move_into_place(staging: str, out: str) -> None:
    """Renames the complete staging folder to `out`; what `out` held (replace) is removed after."""
    if os.path.isdir(out) and not os.listdir(out):
        os.rmdir(out)
    if not os.path.exists(out):
        os.rename(staging, out)
        return
    previous = f"{staging}-previous"
    os.rename(out, previous)
    os.rename(staging, out)
    if os.path.isdir(previous):
        shutil.rmtree(previous)
    else:
        os.remove(previous)


def _remove_abandoned_staging(out: str) -> None:
    """Staging folders of generations into `out` whose process is gone (killed without clean-up)."""
    prefix = f".{os.path.basename(out)}{STAGING_MARK}"
    parent = os.path.dirname(out) or "."
    if not os.path.isdir(parent):
        return
    for name in os.listdir(parent):
        pid = name[len(prefix):].split("-", 1)[0]
        if name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
            log.info("removing %s, left by an interrupted generation", os.path.join(parent, name))
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_record(config: SyntheticConfig, root: str) -> None:
    """RECORD_FILE in `root`, written last: what made this dataset (its settings), that it is complete, and
    that it is synthetic (the out-of-distribution guard of thorax_ray.data.origin reads it)."""
    with open(os.path.join(root, RECORD_FILE), "w") as handle:
        json.dump({"generator": "thorax_ray.synthetic", "thorax_ray": __version__, "data_origin": "synthetic",
                   "settings": config.settings()}, handle, indent=2)


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
    rows = pick_preview_rows(population, count)
    images, titles, boxes = [], [], []
    for row in rows.to_dict("records"):
        pixels, row_boxes = render_row(row, config.size, config.difficulty, config.seed)
        images.append(pixels)
        boxes.append(row_boxes)
        titles.append(f"{row['image_index']} {row['view_position']}\n{row['finding_labels'].replace('|', ', ')}")
    write_contact_sheet(images, titles, boxes, path)
