"""Test-time augmentation (TTA): the views of a batch of model inputs and the mean of their probabilities.

Kinds (`TTA_KINDS`), for normalised images (N, C, S, S) as `data.preprocess.normalise_images` gives them:

- "none": the images as they are (one view).
- "hflip": the images and their horizontal flip (`images.flip(-1)`; 2 views).
- "tencrop": the ten-crop of CheXNet's reimplementations (arnoweng/CheXNet: `Resize(256)`, `TenCrop(224)`,
  mean of the crops' probabilities) at the model's own size S: the batch is resized to R = round(S·256/224)
  per side (`torch.nn.functional.interpolate`, bilinear, antialias, align_corners=False; R = 256 for S = 224),
  then `torchvision.transforms.functional.ten_crop(x, S)` cuts the four corner crops and the centre crop of
  the resized batch and the same five of its horizontal flip (10 views, in torchvision's order).

The probabilities are the mean, with equal weights, of every view's sigmoid probabilities (never of the
logits). Metadata features (the fusion model) go unchanged with every view; a metadata-only model has no
image to augment and is refused (`check_tta`).

How ten-crop differs from those reimplementations: they resize the decoded uint8 image with PIL from its
stored size straight to 256 and normalise afterwards; here the batch was already resized to S (the
preprocessing contract) and normalised, and is resized again, in float. Resizing commutes with the
normalisation (an affine map; the interpolation weights sum to 1), so what differs is the second resampling
(stored -> S -> R instead of stored -> R) and the absent uint8 rounding.

Batching: one forward per view over the caller's whole batch; the views are not concatenated into one
forward. The caller's batch size is its memory budget, and ten-crop's views in one forward would hold ten
times the activations of the un-augmented batch. The cost is one forward per view.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F

from thorax_ray import storage
from thorax_ray.checkpoint import INFO_FILE, load_payload
from thorax_ray.models.registry import get_model_spec

NO_TTA = "none"
TTA_KINDS: tuple[str, ...] = (NO_TTA, "hflip", "tencrop")
TENCROP_RESIZE = 256 / 224  # CheXNet's Resize(256) before TenCrop(224), as a ratio of the model's size
_CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right", "centre")
VIEWS: dict[str, tuple[str, ...]] = {
    NO_TTA: ("image",),
    "hflip": ("image", "hflip"),
    "tencrop": (*_CORNERS, *(f"hflip_{corner}" for corner in _CORNERS)),
}
CALIBRATION_NOTE = ("the checkpoint's calibration and operating points were fitted on un-augmented validation "
                    "predictions")


def check_tta(kind: str, spec=None) -> None:
    """A known kind, and (given the model's `ModelSpec`) one the model can take: one-line ValueErrors."""
    if kind not in TTA_KINDS:
        raise ValueError(f"--tta: unknown test-time augmentation {kind!r}; known: {', '.join(TTA_KINDS)}")
    if kind != NO_TTA and spec is not None and not spec.uses_images:
        raise ValueError(f"--tta {kind}: model {spec.name!r} takes metadata only, no image to augment; "
                         f"use --tta {NO_TTA}")


def check_checkpoint_tta(checkpoint_dir: str, kind: str, *, endpoint_url: str | None = None) -> None:
    """`check_tta` against a checkpoint's model, for a job's driver before Ray starts (when `kind` is not
    "none": reads the checkpoint's small checkpoint.json, not its model.pt, which the job loads later anyway)."""
    check_tta(kind)
    if kind != NO_TTA:
        info = storage.read_json(storage.join(checkpoint_dir, INFO_FILE), endpoint_url=endpoint_url)
        build = (info or {}).get("model_build_config") or load_payload(checkpoint_dir,
                                                                      endpoint_url=endpoint_url).model_build_config
        check_tta(kind, get_model_spec(build["name"]))


def tencrop_size(size: int) -> int:
    """The side the ten-crop resizes an S-pixel batch to before cutting S x S crops: round(S·256/224)."""
    return round(int(size) * TENCROP_RESIZE)


def tta_views(images: torch.Tensor, kind: str) -> Iterator[torch.Tensor]:
    """The views of `images` (N, C, S, S), one at a time, each (N, C, S, S), in `VIEWS[kind]` order."""
    check_tta(kind)
    if kind == NO_TTA:
        yield images
    elif kind == "hflip":
        yield images
        yield images.flip(-1)
    else:
        from torchvision.transforms.functional import ten_crop  # deferred: torchvision (slow import)

        h, w = int(images.shape[-2]), int(images.shape[-1])
        resized = F.interpolate(images, size=(tencrop_size(h), tencrop_size(w)), mode="bilinear",
                                antialias=True, align_corners=False)
        yield from ten_crop(resized, [h, w])


def tta_probabilities(model: torch.nn.Module, images: torch.Tensor | None, features: torch.Tensor | None = None,
                      *, kind: str = NO_TTA, known: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Float32 probabilities (N, 14): the mean over the views of `kind` of sigmoid(model(view, features)).
    `known`: logits the caller already has, by view name (`VIEWS`), e.g. those of the attribution pass over
    the un-augmented images ("image"); those views are not run again. Call under torch.no_grad() (and the
    caller's autocast); the model is called as it is (eval mode is the caller's)."""
    spec = model.spec
    check_tta(kind, spec)
    known = known or {}
    if not spec.uses_images:
        logits = known["image"] if "image" in known else model(*spec.model_inputs(None, features))
        return torch.sigmoid(logits.float())
    total = None
    for name, view in zip(VIEWS[kind], tta_views(images, kind)):
        logits = known[name] if name in known else model(*spec.model_inputs(view, features))
        probabilities = torch.sigmoid(logits.float())
        total = probabilities if total is None else total + probabilities
    return total / len(VIEWS[kind])


def describe_tta(kind: str, size: int) -> dict:
    """What the TTA of `kind` did to an S = `size` pixel model input (JSON-able; recorded with the scores
    and the evaluation metrics)."""
    check_tta(kind)
    description = {"kind": kind, "views": list(VIEWS[kind]), "view_size": int(size)}
    if kind == NO_TTA:
        description["probabilities"] = "sigmoid of the model's logits on the un-augmented image"
        return description
    if kind == "tencrop":
        side = tencrop_size(size)
        description["resized_to"] = side
        description["views_made"] = (
            f"the normalised {size}x{size} input resized to {side}x{side} (bilinear, antialias), then "
            f"torchvision's ten_crop to {size}x{size}: four corners and the centre, and the same of its "
            "horizontal flip")
    else:
        description["views_made"] = "the normalised input and its horizontal flip"
    description["probabilities"] = "mean of the views' sigmoid probabilities (equal weights; not of the logits)"
    description["calibration"] = CALIBRATION_NOTE
    return description


def hflip_mean_centres(centres: Sequence[float]) -> list[float]:
    """Where the cells of the mean of a map and the horizontally flipped map of the flipped image sit along
    the columns: a cell's value is the mean of one at `centres[j]` and one at 1 - centres[n-1-j] (fractions of
    the width), so it belongs at their midpoint. Bin centres ((j + 0.5) / n) are their own midpoints."""
    n = len(centres)
    return [(float(centres[j]) + 1.0 - float(centres[n - 1 - j])) / 2 for j in range(n)]
