"""The one canonical order of the 14 ChestX-ray14 findings and parsing of `Finding Labels` strings."""
from __future__ import annotations

import numpy as np

FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
"""Order used by every label vector, model output and report (the order of Wang et al. 2017)."""

NO_FINDING = "No Finding"
NUM_FINDINGS = len(FINDINGS)

# Classes that have boxes in BBox_List_2017.csv; that file spells Infiltration as "Infiltrate".
BOXED_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)
BBOX_LABEL_ALIASES = {"Infiltrate": "Infiltration"}

_INDEX = {name: i for i, name in enumerate(FINDINGS)}


def column_name(finding: str) -> str:
    """Lowercase snake-case column name of a finding: `Pleural_Thickening` -> `pleural_thickening`."""
    return finding.lower()


FINDING_COLUMNS: tuple[str, ...] = tuple(column_name(f) for f in FINDINGS)


class LabelError(ValueError):
    """A `Finding Labels` value that cannot be parsed; the message names file, row and label."""


def parse_finding_labels(text: str, *, source: str = "<string>", row: int | None = None) -> np.ndarray:
    """Parses `A|B` into a 14-dim uint8 0/1 vector in FINDINGS order.

    `No Finding` must stand alone and gives all zeros. `row` is the 1-based line number in `source`.
    """
    where = f"{source}, row {row}" if row is not None else source
    if not isinstance(text, str) or not text.strip():
        raise LabelError(f"{where}: empty 'Finding Labels'")
    names = [part.strip() for part in text.split("|")]
    vector = np.zeros(NUM_FINDINGS, dtype=np.uint8)
    for name in names:
        if name == NO_FINDING:
            if len(names) > 1:
                raise LabelError(f"{where}: '{NO_FINDING}' combined with other labels in {text!r}")
            continue
        index = _INDEX.get(name)
        if index is None:
            raise LabelError(f"{where}: unknown label {name!r} in {text!r}; known: {', '.join(FINDINGS)}, {NO_FINDING}")
        vector[index] = 1
    return vector


def format_finding_labels(vector: np.ndarray) -> str:
    """Inverse of parse_finding_labels: a 0/1 vector back to the CSV spelling."""
    names = [FINDINGS[i] for i in np.flatnonzero(np.asarray(vector))]
    return "|".join(names) if names else NO_FINDING


def normalise_bbox_label(label: str, *, source: str = "<string>", row: int | None = None) -> str:
    """Maps a BBox_List label (`Infiltrate`) to its FINDINGS spelling."""
    name = BBOX_LABEL_ALIASES.get(label.strip(), label.strip())
    if name not in BOXED_FINDINGS:
        where = f"{source}, row {row}" if row is not None else source
        raise LabelError(f"{where}: unknown box label {label!r}; known: {', '.join(BOXED_FINDINGS)} (or Infiltrate)")
    return name
