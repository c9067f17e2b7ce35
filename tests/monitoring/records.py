"""Validation references and committed score rows made up for the monitoring tests."""
from __future__ import annotations

import numpy as np
import pandas as pd

from thorax_ray.labels import FINDING_COLUMNS, FINDINGS
from thorax_ray.monitoring.reference import validation_reference


def reference(rows: int = 2000, dim: int = 4, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return validation_reference(rng.beta(1, 6, size=(rows, len(FINDINGS))), rng.normal(size=(rows, dim)))


def score_rows(probabilities: np.ndarray, ood_scores: np.ndarray | None, sources: list[str | None]) -> pd.DataFrame:
    """A run's committed rows as `read_scores(..., columns=MONITORED_COLUMNS)` gives them (float32 columns)."""
    n = len(probabilities)
    return pd.DataFrame({**{c: probabilities[:, i].astype(np.float32) for i, c in enumerate(FINDING_COLUMNS)},
                         "ood_score": (np.full(n, np.nan) if ood_scores is None else ood_scores).astype(np.float32),
                         "metadata_source": sources})
