"""Patient-level train/val/test splits and the stable hash that identifies a split.

Two kinds of split (`SplitConfig.kind`, recorded with every manifest by `split_record`):
- "official" (the default): NIH's train_val_list.txt / test_list.txt when the dataset has them, validation
  carved from train_val by patient; a dataset without the lists gets a random patient split instead.
- "random": a random patient split with the stated fractions and seed even when the lists are present.
  CheXNet's split is this kind, 70/10/20 (train/val/test): `kind="random", val_fraction=0.1, test_fraction=0.2`.
Published numbers on one kind are not comparable with numbers on the other (Wang et al. 2017, official
split: 0.745 mean AUROC; CheXNet, random split: 0.841)."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
TRAINING_SPLITS = ("train", "val")  # what training data must have patients in (model selection needs val)
SPLIT_KINDS = ("official", "random")  # SplitConfig.kind


class SplitError(ValueError):
    pass


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of patients; with official lists, `test_fraction` is unused and `val_fraction` is the
    share of train_val patients carved out for validation. `kind` (SPLIT_KINDS): "official" uses the lists
    when present, "random" ignores them (see the module docstring)."""

    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    required: tuple[str, ...] = ()  # splits that must get at least one patient (training data: train and val)
    kind: str = "official"

    def __post_init__(self) -> None:
        if self.kind not in SPLIT_KINDS:
            raise SplitError(f"unknown split kind {self.kind!r}; known: {list(SPLIT_KINDS)}")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise SplitError(f"bad split fractions: val={self.val_fraction}, test={self.test_fraction}")
        unknown = set(self.required) - set(SPLITS)
        if unknown:
            raise SplitError(f"unknown split(s) {sorted(unknown)}; known: {list(SPLITS)}")


def patient_uniform(patient_ids: np.ndarray, *, seed: int, salt: str) -> np.ndarray:
    """A deterministic number in [0, 1) per patient, independent of row order and platform."""
    out = np.empty(len(patient_ids), dtype=np.float64)
    cache: dict[int, float] = {}
    for i, pid in enumerate(patient_ids):
        pid = int(pid)
        value = cache.get(pid)
        if value is None:
            digest = hashlib.sha256(f"{salt}:{seed}:{pid}".encode()).digest()
            value = cache[pid] = int.from_bytes(digest[:8], "big") / 2**64
        out[i] = value
    return out


def assign_splits(
    frame: pd.DataFrame,
    config: SplitConfig = SplitConfig(),
    *,
    train_val_names: set[str] | None = None,
    test_names: set[str] | None = None,
) -> pd.Series:
    """Returns the split of each row ("train"/"val"/"test"); no patient ends up in two splits.

    With the official lists, test = test_list.txt and validation is carved from train_val by patient.
    Rows in neither list follow their patient's other images, or a patient hash when the patient is
    in neither list either.
    """
    patients = frame["patient_id"].to_numpy()
    if test_names is not None or train_val_names is not None:
        test_names = test_names or set()
        train_val_names = train_val_names or set()
        both = test_names & train_val_names
        if both:
            raise SplitError(f"{len(both)} images are in both test_list.txt and train_val_list.txt, e.g. {sorted(both)[:3]}")
        in_test = frame["image_index"].isin(test_names).to_numpy()
        in_train_val = frame["image_index"].isin(train_val_names).to_numpy()
        test_patients = set(patients[in_test])
        overlap = test_patients & set(patients[in_train_val])
        if overlap:
            raise SplitError(
                f"the official lists put {len(overlap)} patients in both test and train_val, e.g. patient {sorted(overlap)[:3]}"
            )
        unlisted = ~(in_test | in_train_val)
        if unlisted.any():
            log.warning("%d metadata rows are in neither split list; they follow their patient or a patient hash",
                        int(unlisted.sum()))
        is_test = np.isin(patients, list(test_patients))
        orphan_patients = unlisted & ~is_test & ~np.isin(patients, list(set(patients[in_train_val])))
        is_test |= orphan_patients & (patient_uniform(patients, seed=config.seed, salt="test") < config.test_fraction)
        is_val = ~is_test & (patient_uniform(patients, seed=config.seed, salt="val") < config.val_fraction)
    else:
        u = patient_uniform(patients, seed=config.seed, salt="split")
        is_test = u < config.test_fraction
        is_val = ~is_test & (u < config.test_fraction + config.val_fraction)
    split = np.where(is_test, "test", np.where(is_val, "val", "train"))
    return pd.Series(split, index=frame.index, name="split")


def split_record(config: SplitConfig, *, official_lists: bool) -> dict:
    """What a manifest records of its split: {"kind", "requested", "val_fraction", "test_fraction", "seed"};
    `kind` is the split the rows got ("official" only when `official_lists` were used), `requested` the
    config's kind (an "official" request on a dataset without the lists gives a "random" split), and
    `test_fraction` is None for the official split (test_list.txt decides)."""
    kind = "official" if official_lists else "random"
    return {"kind": kind, "requested": config.kind, "val_fraction": config.val_fraction,
            "test_fraction": None if official_lists else config.test_fraction, "seed": config.seed}


def describe_split(record: dict | None) -> str:
    """One line for people: "random patient split 70/10/20 (train/val/test), seed 0", "official split
    (NIH's test_list.txt; validation 10% of train_val patients, seed 0)", or "not recorded"."""
    if not record or record.get("kind") not in SPLIT_KINDS:
        return "not recorded"
    val, seed = record.get("val_fraction"), record.get("seed")
    if record["kind"] == "official":
        carved = (f"validation {_percent(val)} of train_val patients" if val is not None
                  else "validation carved by patient")
        return f"official split (NIH's test_list.txt; {carved}, seed {seed})"
    test = record.get("test_fraction")
    if val is None or test is None:
        return "random patient split"
    shares = "/".join(_percent(x, sign=False) for x in (1 - val - test, val, test))
    fallback = " (no official lists in the dataset)" if record.get("requested") == "official" else ""
    return f"random patient split {shares} (train/val/test), seed {seed}{fallback}"


def _percent(fraction: float, *, sign: bool = True) -> str:
    text = f"{fraction * 100:.1f}".rstrip("0").rstrip(".")
    return text + ("%" if sign else "")


def split_hash(image_index: pd.Series, split: pd.Series) -> str:
    """A stable hash of which image is in which split (independent of row order)."""
    pairs = sorted(zip(image_index.astype(str), split.astype(str)))
    digest = hashlib.sha256()
    for name, part in pairs:
        digest.update(f"{name}\t{part}\n".encode())
    return digest.hexdigest()[:16]


def check_patient_disjoint(frame: pd.DataFrame) -> None:
    """Raises SplitError if a patient appears in more than one split."""
    per_patient = frame.groupby("patient_id")["split"].nunique()
    leaking = per_patient[per_patient > 1]
    if len(leaking):
        raise SplitError(f"{len(leaking)} patients appear in more than one split, e.g. {list(leaking.index[:3])}")


FRACTION_FLAGS = {"val": "--val-fraction", "test": "--test-fraction"}


def check_required_splits(frame: pd.DataFrame, config: SplitConfig, *, source: str) -> None:
    """Raises SplitError naming the first of `config.required` that got no patient, and how to fix it
    (a model cannot be selected without validation rows, nor trained without training rows)."""
    patients = frame.groupby("split")["patient_id"].nunique()
    for split in config.required:
        if patients.get(split, 0):
            continue
        counts = ", ".join(f"{s} {int(patients.get(s, 0))}" for s in SPLITS)
        fix = (f"raise {FRACTION_FLAGS[split]} (now {getattr(config, f'{split}_fraction')})" if split in FRACTION_FLAGS
               else "lower --val-fraction / --test-fraction")
        raise SplitError(f"{source}: the {split} split has no patients (patients per split: {counts}); "
                         f"{fix} or use a dataset with more patients")
