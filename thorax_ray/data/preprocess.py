"""The preprocessing every stage applies alike: the contract a model expects (stored in its checkpoint,
applied when training, validating, scoring and evaluating), and turning a batch of rows (a pyarrow table)
into model inputs, images staying uint8 until here and becoming normalised float tensors on the device."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from thorax_ray.data.pipeline import images_to_array
from thorax_ray.labels import FINDING_COLUMNS

# One-channel version of the ImageNet statistics (mean of the RGB values), so ImageNet stems summed to one
# channel see familiar input.
IMAGE_MEAN, IMAGE_STD = 0.449, 0.226


@dataclass
class Batch:
    image_index: list[str]
    labels: torch.Tensor  # (N, 14) float
    images: torch.Tensor | None  # (N, 1, S, S) uint8
    features: torch.Tensor | None  # (N, F) float


def batch_from_arrow(table: pa.Table, *, stored_size: int, features=None, images: bool = True) -> Batch:
    labels = np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in FINDING_COLUMNS])
    image_tensor = None
    if images:
        pixels = images_to_array(table.column("image"), stored_size)
        image_tensor = torch.from_numpy(np.ascontiguousarray(pixels)).unsqueeze(1)
    feature_tensor = None
    if features is not None:
        frame = table.select(list(features.columns)).to_pandas()
        feature_tensor = torch.from_numpy(features.encode(frame))
    return Batch(image_index=table.column("image_index").to_pylist(),
                 labels=torch.from_numpy(labels.astype(np.float32)), images=image_tensor, features=feature_tensor)


def normalise_images(images: torch.Tensor, contract: dict, *, device: torch.device) -> torch.Tensor:
    """uint8 (N, 1, S, S) -> float on `device`, resized to the contract's size, scaled and standardised."""
    x = images.to(device, non_blocking=True).float().mul_(contract["scale"])
    if x.shape[-1] != contract["size"] or x.shape[-2] != contract["size"]:
        x = F.interpolate(x, size=(contract["size"],) * 2, mode="bilinear", antialias=True, align_corners=False)
    return (x - contract["mean"]) / contract["std"]


def preprocessing_contract(size: int) -> dict:
    """What a model expects; stored with every checkpoint and applied identically when scoring."""
    return {"channels": 1, "size": size, "input_dtype": "uint8", "scale": 1 / 255.0,
            "mean": IMAGE_MEAN, "std": IMAGE_STD, "resize": "bilinear with box reduction (Pillow)"}
