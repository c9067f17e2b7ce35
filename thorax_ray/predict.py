"""Running a model over rows: probabilities for every row exactly once (validation, evaluation, scoring)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from thorax_ray.train.batches import batch_from_arrow, normalise_images


@dataclass
class Predictions:
    image_index: list[str]
    labels: np.ndarray  # (N, 14) 0/1
    probabilities: np.ndarray  # (N, 14)

    def check_unique(self) -> None:
        if len(set(self.image_index)) != len(self.image_index):
            raise RuntimeError("evaluation saw some rows more than once; AUROC would be wrong")


@torch.no_grad()
def predict(model: torch.nn.Module, tables: Iterable, *, contract: dict, stored_size: int,
            device: torch.device, autocast_dtype: torch.dtype | None = None) -> Predictions:
    """Probabilities for every row of `tables` (pyarrow tables of dataset rows), model in eval mode."""
    spec = model.spec
    features = getattr(model, "metadata_features", None) if spec.uses_metadata else None
    model.eval()
    names, labels, probabilities = [], [], []
    for table in tables:
        batch = batch_from_arrow(table, stored_size=stored_size, features=features, images=spec.uses_images)
        images = normalise_images(batch.images, contract, device=device) if spec.uses_images else None
        feats = batch.features.to(device) if batch.features is not None else None
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(*spec.model_inputs(images, feats))
        probabilities.append(torch.sigmoid(logits.float()).cpu().numpy())
        labels.append(batch.labels.numpy())
        names.extend(batch.image_index)
    empty = np.zeros((0, 14), dtype=np.float32)
    result = Predictions(names, np.concatenate(labels) if labels else empty,
                         np.concatenate(probabilities) if probabilities else empty)
    result.check_unique()
    return result
