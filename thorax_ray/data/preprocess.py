"""The preprocessing every stage applies alike: the contract a model expects (stored in its checkpoint,
applied when training, validating, scoring and evaluating), and turning a batch of rows (a pyarrow table)
into model inputs, images staying uint8 until here and becoming normalised float tensors on the device."""
from __future__ import annotations

from dataclasses import asdict, dataclass

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


@dataclass(frozen=True)
class PreprocessingContract:
    """What a model expects of its input: stored with every checkpoint (as `to_dict()`, under
    "preprocessing") and applied identically when training, validating, scoring and evaluating."""

    size: int  # side of the square input, pixels
    channels: int = 1
    input_dtype: str = "uint8"  # images travel as this until `normalise_images`
    scale: float = 1 / 255.0
    mean: float = IMAGE_MEAN
    std: float = IMAGE_STD
    resize: str = "bilinear with box reduction (Pillow)"

    def to_dict(self) -> dict:
        """Plain types, as checkpoints (torch.load(weights_only=True)) and score metadata (JSON) hold it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: dict) -> "PreprocessingContract":
        """The contract a checkpoint stored (a key it does not have takes the default)."""
        return cls(**stored)


def normalise_images(images: torch.Tensor, contract: PreprocessingContract, *, device: torch.device) -> torch.Tensor:
    """uint8 (N, 1, S, S) -> float on `device`, resized to the contract's size, scaled and standardised."""
    x = images.to(device, non_blocking=True).float().mul_(contract.scale)
    if x.shape[-1] != contract.size or x.shape[-2] != contract.size:
        x = F.interpolate(x, size=(contract.size,) * 2, mode="bilinear", antialias=True, align_corners=False)
    return (x - contract.mean) / contract.std


def preprocessing_contract(size: int) -> PreprocessingContract:
    """The contract of a model trained at `size` pixels."""
    return PreprocessingContract(size=int(size))
