"""Synthetic batches for the monitoring tests, rendered in memory at the scorer's size (no PNG round trip), and
a tiny small_cnn trained on them in plain torch (no Ray): seconds on one core."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from thorax_ray.data.preprocess import normalise_images, preprocessing_contract
from thorax_ray.models import create_model
from thorax_ray.monitoring.features import penultimate_features
from thorax_ray.monitoring.reference import validation_reference
from thorax_ray.synthetic.dataset import render_row
from thorax_ray.synthetic.population import PopulationConfig, sample_population

SIZE = 64
CONTRACT = preprocessing_contract(SIZE)


def render(images: int, *, seed: int, difficulty: float) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, uint8 pixels (N, SIZE, SIZE), labels (N, 14)) of `images` synthetic radiographs."""
    population = sample_population(PopulationConfig(images=images, seed=seed))
    pixels = np.stack([render_row(row, SIZE, difficulty, seed)[0] for row in population.to_dict("records")])
    return population["image_index"].tolist(), pixels, np.stack(population["labels"].to_numpy()).astype(np.float32)


def normalised(pixels: np.ndarray) -> torch.Tensor:
    return normalise_images(torch.from_numpy(pixels).unsqueeze(1), CONTRACT, device=torch.device("cpu"))


def train_tiny_cnn(pixels: np.ndarray, labels: np.ndarray, *, epochs: int = 4, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("small_cnn")
    images, targets = normalised(pixels), torch.from_numpy(labels)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), 32):
            rows = order[start:start + 32]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images[rows]), targets[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def reference_of_images(model: torch.nn.Module, pixels: np.ndarray) -> dict:
    """The validation reference of `pixels`, computed as training computes it (probabilities and the features
    captured in the same pass)."""
    with torch.no_grad(), penultimate_features(model) as captured:
        probabilities = torch.sigmoid(model(normalised(pixels))).numpy()
    return validation_reference(probabilities, captured.array())


def scorer_table(names: list[str], pixels: np.ndarray) -> pa.Table:
    """Rows as the scorer's input (decoded images at SIZE, original size known)."""
    n = len(names)
    return pa.table({"image_index": names, "path": [f"/in/{name}" for name in names],
                     "metadata_source": ["csv"] * n, "image": [p.tobytes() for p in pixels],
                     "width": [1024] * n, "height": [1024] * n, "ok": [True] * n, "stage": [""] * n,
                     "reason": [""] * n})
