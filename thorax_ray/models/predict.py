"""Running a model over rows: probabilities for every row exactly once (validation, evaluation, scoring)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from thorax_ray.data.preprocess import Batch, PreprocessingContract, batch_from_arrow, normalise_images
from thorax_ray.labels import FINDINGS
from thorax_ray.models.tta import NO_TTA, check_tta, tta_probabilities


@dataclass
class Predictions:
    image_index: list[str]
    labels: np.ndarray  # (N, 14) 0/1
    probabilities: np.ndarray  # (N, 14)

    @classmethod
    def concatenate(cls, parts: Iterable["Predictions"]) -> "Predictions":
        """One set from several (e.g. every worker's share of the validation rows)."""
        parts = [p for p in parts if len(p.image_index)]
        if not parts:
            empty = np.zeros((0, len(FINDINGS)), dtype=np.float32)
            return cls([], empty, empty.copy())
        return cls([n for p in parts for n in p.image_index], np.concatenate([p.labels for p in parts]),
                   np.concatenate([p.probabilities for p in parts]))

    def check_unique(self) -> None:
        if len(set(self.image_index)) != len(self.image_index):
            raise RuntimeError("evaluation saw some rows more than once; AUROC would be wrong")


def predict(model: torch.nn.Module, tables: Iterable, *, contract: PreprocessingContract, stored_size: int,
            device: torch.device, autocast_dtype: torch.dtype | None = None, tta: str = NO_TTA) -> Predictions:
    """Probabilities for every row of `tables` (pyarrow tables of dataset rows), model in eval mode; `tta`: a
    test-time augmentation of thorax_ray.models.tta (the mean of its views' probabilities)."""
    spec = model.spec
    features = getattr(model, "metadata_features", None) if spec.uses_metadata else None
    batches = (batch_from_arrow(table, stored_size=stored_size, features=features, images=spec.uses_images)
               for table in tables)
    return predict_batches(model, batches, contract=contract, device=device, autocast_dtype=autocast_dtype, tta=tta)


@torch.no_grad()
def predict_batches(model: torch.nn.Module, batches: Iterable[Batch], *, contract: PreprocessingContract, device: torch.device,
                    autocast_dtype: torch.dtype | None = None, tta: str = NO_TTA) -> Predictions:
    """Probabilities for every row of `batches` (host or device tensors), model in eval mode; `tta` as `predict`'s."""
    spec = model.spec
    check_tta(tta, spec)
    model.eval()
    names, labels, probabilities = [], [], []
    for batch in batches:
        images = normalise_images(batch.images, contract, device=device) if spec.uses_images else None
        feats = batch.features.to(device) if batch.features is not None else None
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            probabilities.append(tta_probabilities(model, images, feats, kind=tta).cpu().numpy())
        labels.append(batch.labels.cpu().numpy())
        names.extend(batch.image_index)
    result = Predictions.concatenate([Predictions(names, np.concatenate(labels), np.concatenate(probabilities))]
                                     if labels else [])
    result.check_unique()
    return result
