"""The penultimate features of a model: the input of its final `classifier` layer (every model of
thorax_ray.models ends with one): the pooled CNN features, the fusion model's pooled features and metadata
embedding side by side, the metadata MLP's last hidden layer. They are captured by a forward pre-hook during
a forward pass that runs anyway (the validation pass of training, the scorer's pass), so monitoring costs no
extra pass; the hook is removed when the `with` block ends.

    with penultimate_features(model) as captured:
        logits = model(images)
    features = captured.array()  # (N, D) float32, rows in call order
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch


class CapturedFeatures:
    """The classifier inputs seen inside one `penultimate_features` block, call after call."""

    def __init__(self) -> None:
        self.parts: list[torch.Tensor] = []

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    def tensor(self) -> torch.Tensor | None:
        """(N, D) float32 on the device they were computed on, in call order; None when nothing was captured."""
        return torch.cat(self.parts) if self.parts else None

    def array(self) -> np.ndarray | None:
        """(N, D) float32 numpy array on the host; None when nothing was captured."""
        tensor = self.tensor()
        return None if tensor is None else tensor.cpu().numpy()


def classifier_of(model: torch.nn.Module) -> torch.nn.Module | None:
    """The model's final layer (`model.classifier`), None when the model has none."""
    classifier = getattr(model, "classifier", None)
    return classifier if isinstance(classifier, torch.nn.Module) else None


@contextlib.contextmanager
def penultimate_features(model: torch.nn.Module) -> Iterator[CapturedFeatures]:
    """Captures the input of `model.classifier` at every call inside the block (detached, float32: under bf16
    autocast the classifier casts it up itself, models/head.py). A model without a classifier captures
    nothing (`captured.array()` is None)."""
    captured = CapturedFeatures()
    classifier = classifier_of(model)
    if classifier is None:
        yield captured
        return

    def keep(module, inputs) -> None:
        captured.parts.append(inputs[0].detach().float().flatten(1))

    handle = classifier.register_forward_pre_hook(keep)
    try:
        yield captured
    finally:
        handle.remove()
