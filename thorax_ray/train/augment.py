"""Batch augmentations on the training worker (tensors, vectorised, with the worker's own RNG)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from thorax_ray.train.config import AugmentConfig


def _random_columns(n: int, k: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, k) uniform [0, 1) numbers drawn from the worker's CPU generator (so results do not depend on the
    device) and moved to `device` in one copy: from pinned memory with `non_blocking=True` on CUDA, so a
    training step issues a single asynchronous host-to-device copy instead of one blocking copy per draw."""
    draws = torch.rand(n, k, generator=generator)
    if device.type == "cuda":
        return draws.pin_memory().to(device, non_blocking=True)
    return draws.to(device)


def augment_batch(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random flip, small affine (rotation, zoom, shift) and brightness/contrast on float images (N, 1, H, W)."""
    n = images.shape[0]
    flip = bool(config.hflip)
    affine = bool(config.rotate_degrees or config.scale or config.translate)
    photometric = bool(config.brightness or config.contrast)
    k = int(flip) + 4 * int(affine) + 2 * int(photometric)
    if k == 0:
        return images
    draws = _random_columns(n, k, generator, images.device)
    column = iter(range(k))

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * draws[:, next(column)]

    if flip:
        flips = draws[:, next(column)] < 0.5
        images = torch.where(flips[:, None, None, None], images.flip(-1), images)
    if affine:
        angle = uniform(-config.rotate_degrees, config.rotate_degrees) * math.pi / 180
        zoom = uniform(1 - config.scale, 1 + config.scale)
        shift_x, shift_y = uniform(-config.translate, config.translate) * 2, uniform(-config.translate, config.translate) * 2
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
        grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if photometric:
        gain = uniform(1 - config.contrast, 1 + config.contrast)[:, None, None, None]
        bias = uniform(-config.brightness, config.brightness)[:, None, None, None]
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - mean) * gain + mean + bias
    return images
