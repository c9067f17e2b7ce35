"""The one model registry and factory (timm-style), and the one calling convention.

Calling convention (defined here and nowhere else; use `forward_model` / `ModelSpec.model_inputs`):

=============  ===========  =============================  ==========================
input_kind     models       call                           inputs
=============  ===========  =============================  ==========================
``image``      CNNs         ``model(images)``              images (N, 1, H, W) float
``metadata``   ``mlp``      ``model(features)``            features (N, F) float32
``both``       ``fusion``   ``model(images, features)``    both
=============  ===========  =============================  ==========================

`features` are `MetadataFeatures.encode(manifest_rows)` for the model's own
`model.metadata_features`. Every model returns logits (N, 14) in `FINDINGS` order and carries
`model.spec` (a `ModelSpec`) and `model.build_config` (what `create_model_from_config` needs to
rebuild the architecture, e.g. from a checkpoint, plus "init": how the model was initialised, a dict
{"kind": "imagenet" | "weights_file" | "random", "source", "label"} kept through rebuilding).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from thorax_ray.checkpoint import CheckpointPayload
from thorax_ray.models.features import MetadataFeatures

InputKind = Literal["image", "metadata", "both"]
RANDOM_INIT = {"kind": "random", "source": "", "label": "random init"}
INPUT_KINDS: tuple[str, ...] = ("image", "metadata", "both")
DEFAULT_MODEL = "densenet121"


@dataclass(frozen=True)
class ModelSpec:
    """What a model consumes. `uses_images` / `uses_metadata` follow from `input_kind`."""

    name: str
    input_kind: InputKind

    def __post_init__(self) -> None:
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {list(INPUT_KINDS)}, got {self.input_kind!r}")

    @property
    def uses_images(self) -> bool:
        return self.input_kind in ("image", "both")

    @property
    def uses_metadata(self) -> bool:
        return self.input_kind in ("metadata", "both")

    def model_inputs(self, images: torch.Tensor | None = None,
                     features: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """The positional arguments of `model(...)`: (images,), (features,) or (images, features)."""
        if self.uses_images and images is None:
            raise ValueError(f"model {self.name!r} ({self.input_kind}) needs images")
        if self.uses_metadata and features is None:
            raise ValueError(f"model {self.name!r} ({self.input_kind}) needs metadata features")
        if self.input_kind == "image":
            return (images,)
        if self.input_kind == "metadata":
            return (features,)
        return (images, features)


def forward_model(model: nn.Module, images: torch.Tensor | None = None,
                  features: torch.Tensor | None = None) -> torch.Tensor:
    """Calls any registered model with whichever of images / features it uses; returns logits."""
    return model(*model.spec.model_inputs(images, features))


@dataclass(frozen=True)
class _Entry:
    name: str
    input_kind: InputKind
    builder: Callable[..., nn.Module]


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, *, input_kind: InputKind = "image") -> Callable:
    """Decorator registering `builder(*, metadata_features, pretrained, **kwargs) -> nn.Module`.

    `metadata_features` is always a `MetadataFeatures` for models whose `input_kind` uses
    metadata and `None` otherwise; `pretrained` is a path/URI or None.
    """
    ModelSpec(name, input_kind)  # validates input_kind

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = _Entry(name, input_kind, builder)
        return builder

    return decorator


def list_models(input_kind: InputKind | None = None) -> list[str]:
    """Registered names (sorted), optionally only those of one input kind."""
    return sorted(n for n, e in _REGISTRY.items() if input_kind is None or e.input_kind == input_kind)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]


def get_model_spec(name: str) -> ModelSpec:
    """The spec of a registered model without building it."""
    entry = _entry(name)
    return ModelSpec(entry.name, entry.input_kind)


def create_model(name: str, *, metadata_features: MetadataFeatures | None = None,
                 pretrained: str | None = None, **kwargs: Any) -> nn.Module:
    """Builds a registered model; logits (N, 14).

    metadata_features: for models using metadata (default `MetadataFeatures()`); ignored by image models.
    pretrained: "imagenet" (torchvision's ImageNet weights) or a local path / URI of an ImageNet-style
        torchvision state_dict for the CNN (backbone).
    kwargs: architecture options (e.g. `drop_rate`, `hidden`, `dropout`, `backbone` for fusion).
    """
    entry = _entry(name)
    spec = ModelSpec(entry.name, entry.input_kind)
    if spec.uses_metadata:
        if metadata_features is None:
            metadata_features = MetadataFeatures()
        elif isinstance(metadata_features, Mapping):
            metadata_features = MetadataFeatures.from_dict(metadata_features)
        elif not isinstance(metadata_features, MetadataFeatures):
            metadata_features = MetadataFeatures(tuple(metadata_features))
    else:
        metadata_features = None
    model = entry.builder(metadata_features=metadata_features, pretrained=pretrained, **kwargs)
    model.spec = spec
    model.metadata_features = metadata_features
    model.build_config = {
        "name": name,
        "metadata_features": metadata_features.to_dict() if metadata_features is not None else None,
        "kwargs": dict(kwargs),
        "init": dict(getattr(model, "init", None) or RANDOM_INIT),
    }
    return model


def create_model_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Rebuilds an architecture from `model.build_config` (randomly initialised; load weights after)."""
    features = config.get("metadata_features")
    model = create_model(
        config["name"],
        metadata_features=MetadataFeatures.from_dict(features) if features else None,
        **dict(config.get("kwargs") or {}),
    )
    if config.get("init"):  # the weights loaded next are those of that initialisation, trained
        model.build_config["init"] = dict(config["init"])
    return model


def build_model(payload: CheckpointPayload) -> nn.Module:
    """The architecture of a checkpoint's payload (thorax_ray.checkpoint), with its weights loaded strictly,
    in eval mode."""
    model = create_model_from_config(payload.model_build_config)
    model.load_state_dict(payload.model_state, strict=True)
    return model.eval()
