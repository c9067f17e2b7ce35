"""The one registry of attribution methods, the uniform contract, and the Captum-based methods.

Contract::

    method = get_method(name)(model, **options)       # unknown option -> TypeError
    result = method.attribute(images, features)        # -> Attribution

`images` (N, C, S, S) float and `features` (N, F) float are what `model.spec.model_inputs` needs
(pass None for what the model does not use). Image methods return `Attribution.maps` (N, 14, h, w)
float, raw and un-normalised (see `encode.normalise_maps`), at the model's feature-map resolution
unless `map_size` says otherwise; `metadata_ig` returns `feature_attributions` (N, 14, F).
`logits` (N, 14) come from the method's own forward pass where it has one.

Every method runs the model in eval mode and restores each module's `training` flag afterwards;
Captum removes the hooks it registers; parameters' `.grad` are never written (gradients are taken
with respect to inputs only). `cam`, `fast_cam` and `gradcam` live in `cam.py`.

Map geometry: `AttributionMethod.map_cells` says where a map's cells sit in the image. "receptive_fields"
(the CAM family): cell (i, j) is feature-map position (i, j), centred where the network's receptive field
of that position is (`thorax_ray.models.map_centres`); "bins" (pixel methods): cell (i, j) is the average
over an equal bin of pixels, centred in its bin.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

# Grad-CAM's ReLU'd class activation maps: on the demo data they box the 8 findings at T(IoBB=0.5) 0.70 on
# average under Wang et al.'s protocol, against 0.22 for the raw maps (`cam`), whose negative evidence
# drags the min-max scaling; `cam` stays available (and is what Wang et al. thresholded).
DEFAULT_IMAGE_METHOD = "fast_cam"
ONE_FORWARD_METHODS = ("cam", "fast_cam")  # maps from the forward pass that gives the logits
DEFAULT_METADATA_METHOD = "metadata_ig"


@dataclass
class Attribution:
    """Result of `AttributionMethod.attribute` (tensors on the inputs' device, detached)."""

    method: str
    logits: torch.Tensor | None = None
    maps: torch.Tensor | None = None  # (N, 14, h, w) float, raw
    feature_attributions: torch.Tensor | None = None  # (N, 14, F)
    feature_names: tuple[str, ...] | None = None

    @property
    def map_size(self) -> tuple[int, int] | None:
        return None if self.maps is None else (int(self.maps.shape[-2]), int(self.maps.shape[-1]))


def input_kind(model: nn.Module) -> str:
    """`model.spec.input_kind`; a model without a spec is treated as an image model."""
    spec = getattr(model, "spec", None)
    return "image" if spec is None else spec.input_kind


@contextlib.contextmanager
def evaluation(model: nn.Module) -> Iterator[nn.Module]:
    """Puts every module in eval mode and restores each one's `training` flag afterwards."""
    states = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in states:
            module.training = training


class AttributionMethod:
    """Base class: `__init__(model, **options)` validates, `attribute(images, features)` computes."""

    name: ClassVar[str] = ""
    input_kinds: ClassVar[tuple[str, ...]] = ("image", "both")
    map_cells: ClassVar[str] = "receptive_fields"

    def __init__(self, model: nn.Module) -> None:
        kind = input_kind(model)
        if kind not in self.input_kinds:
            raise ValueError(f"attribution method {self.name!r} needs a model with input kind in "
                             f"{list(self.input_kinds)}; {type(model).__name__} has {kind!r}")
        self.model = model
        self.input_kind = kind

    def attribute(self, images: torch.Tensor | None = None,
                  features: torch.Tensor | None = None) -> Attribution:
        raise NotImplementedError

    def _checked(self, images: torch.Tensor | None,
                 features: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Detached inputs; errors name what is missing or mis-shaped."""
        if self.input_kind in ("image", "both"):
            if images is None or images.dim() != 4:
                raise ValueError(f"{self.name}: images must be (N, C, H, W), got "
                                 f"{None if images is None else tuple(images.shape)}")
            images = images.detach()
        if self.input_kind in ("metadata", "both"):
            if features is None or features.dim() != 2:
                raise ValueError(f"{self.name}: metadata features must be (N, F), got "
                                 f"{None if features is None else tuple(features.shape)}")
            features = features.detach()
        return images, features

    def _image_forward_args(self, features: torch.Tensor | None) -> tuple[torch.Tensor, ...] | None:
        """Captum `additional_forward_args` when attributing to the images: `model(images, *extra)`."""
        return (features,) if self.input_kind == "both" else None


_METHODS: dict[str, type[AttributionMethod]] = {}


def register_method(name: str) -> Callable[[type[AttributionMethod]], type[AttributionMethod]]:
    """Class decorator: registers an `AttributionMethod` subclass under `name` (sets `cls.name`)."""

    def decorator(cls: type[AttributionMethod]) -> type[AttributionMethod]:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"attribution method {name!r} is already registered")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return decorator


def _load_builtins() -> None:
    import thorax_ray.attribution.cam  # noqa: F401  (registers cam, fast_cam, gradcam)


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    _load_builtins()
    return sorted(_METHODS)


def get_method(name: str) -> type[AttributionMethod]:
    """The method class registered as `name`; call it as `get_method(name)(model, **options)`."""
    _load_builtins()
    if name not in _METHODS:
        raise ValueError(f"unknown attribution method {name!r}; known methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def default_method_name(model: nn.Module) -> str:
    """`fast_cam` for models using images, `metadata_ig` for the metadata-only MLP."""
    return DEFAULT_METADATA_METHOD if input_kind(model) == "metadata" else DEFAULT_IMAGE_METHOD


def attribute(model: nn.Module, images: torch.Tensor | None = None, features: torch.Tensor | None = None,
              *, method: str | None = None, **options: Any) -> Attribution:
    """One-shot `get_method(method or default)(model, **options).attribute(images, features)`."""
    return get_method(method or default_method_name(model))(model, **options).attribute(images, features)


# ----- helpers shared by the image methods -----------------------------------------------------------


def logits_and_feature_map(model: nn.Module, images: torch.Tensor,
                           features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass (call under no_grad): logits (N, K) and the last feature map (N, C, h, w)."""
    fmap = model.features(images)
    if input_kind(model) == "both":
        return model.pool_and_classify(fmap, features), fmap
    return model.pool_and_classify(fmap), fmap


def _pair(value: int | tuple[int, int] | None, default: tuple[int, int], what: str) -> tuple[int, int]:
    if value is None:
        return default
    pair = (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))
    if min(pair) < 1:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return pair


class _PixelMapMethod(AttributionMethod):
    """Methods attributing to input pixels: maps are pooled to `map_size` (default feature-map size)."""

    map_cells = "bins"

    def __init__(self, model: nn.Module, *, map_size: int | tuple[int, int] | None = None) -> None:
        super().__init__(model)
        self.map_size = None if map_size is None else _pair(map_size, (1, 1), "map_size")
        if self.map_size is None and not hasattr(model, "features"):
            raise ValueError(f"{self.name}: model has no `features(images)`; pass map_size=(h, w)")

    def _logits_and_size(self, images: torch.Tensor,
                         features: torch.Tensor | None) -> tuple[torch.Tensor, tuple[int, int]]:
        with torch.no_grad():
            if hasattr(self.model, "features"):
                logits, fmap = logits_and_feature_map(self.model, images, features)
                size = (int(fmap.shape[-2]), int(fmap.shape[-1]))
            else:
                logits = self.model(images, features) if self.input_kind == "both" else self.model(images)
                size = self.map_size
        return logits, self.map_size or size


@register_method("integrated_gradients")
class IntegratedGradientsMaps(_PixelMapMethod):
    """Captum `IntegratedGradients` on the images (baseline zeros), one run per class.

    maps[c] = adaptive_avg_pool(sum_channels |IG_c|) to the map size. At most `internal_batch_size`
    scaled images go through the model at once (at least N), bounding memory.
    """

    def __init__(self, model: nn.Module, *, n_steps: int = 16, internal_batch_size: int = 16,
                 method: str = "gausslegendre", map_size: int | tuple[int, int] | None = None) -> None:
        super().__init__(model, map_size=map_size)
        if n_steps < 1 or internal_batch_size < 1:
            raise ValueError(f"n_steps ({n_steps}) and internal_batch_size ({internal_batch_size}) must be >= 1")
        self.n_steps, self.internal_batch_size, self.ig_method = int(n_steps), int(internal_batch_size), method

    def attribute(self, images: torch.Tensor | None = None,
                  features: torch.Tensor | None = None) -> Attribution:
        from captum.attr import IntegratedGradients

        images, features = self._checked(images, features)
        with evaluation(self.model):
            logits, size = self._logits_and_size(images, features)
            ig = IntegratedGradients(self.model)
            per_class = []
            with torch.enable_grad():
                for target in range(logits.shape[1]):
                    attr = ig.attribute(images, baselines=0.0, target=target, n_steps=self.n_steps,
                                        method=self.ig_method, internal_batch_size=self.internal_batch_size,
                                        additional_forward_args=self._image_forward_args(features))
                    per_class.append(attr.detach().abs().sum(dim=1))
        maps = F.adaptive_avg_pool2d(torch.stack(per_class, dim=1), size)
        return Attribution(self.name, logits=logits, maps=maps)


@register_method("occlusion")
class OcclusionMaps(_PixelMapMethod):
    """Captum `Occlusion`: a `window` patch set to `baseline`, slid by `stride` (defaults S//8, S//16).

    Attribution = drop of each logit when a patch covering the pixel is occluded (averaged over
    patches); maps keep the positive part (evidence for the class) unless `positive=False`.
    `perturbations_per_eval` occluded copies per image go through the model at once.
    """

    def __init__(self, model: nn.Module, *, window: int | tuple[int, int] | None = None,
                 stride: int | tuple[int, int] | None = None, baseline: float = 0.0,
                 perturbations_per_eval: int = 8, positive: bool = True,
                 map_size: int | tuple[int, int] | None = None) -> None:
        super().__init__(model, map_size=map_size)
        self.window, self.stride, self.baseline = window, stride, float(baseline)
        self.perturbations_per_eval, self.positive = max(1, int(perturbations_per_eval)), positive

    def attribute(self, images: torch.Tensor | None = None,
                  features: torch.Tensor | None = None) -> Attribution:
        from captum.attr import Occlusion

        images, features = self._checked(images, features)
        n, c, height, width = images.shape
        window = _pair(self.window, (max(1, height // 8), max(1, width // 8)), "window")
        stride = _pair(self.stride, (max(1, height // 16), max(1, width // 16)), "stride")
        kwargs = dict(sliding_window_shapes=(c, *window), strides=(c, *stride), baselines=self.baseline,
                      perturbations_per_eval=self.perturbations_per_eval,
                      additional_forward_args=self._image_forward_args(features))
        with evaluation(self.model), torch.no_grad():
            logits, size = self._logits_and_size(images, features)
            occlusion = Occlusion(self.model)
            k = logits.shape[1]
            try:  # Captum >= 0.9: all outputs at once, (N * K, C, H, W)
                attr = occlusion.attribute(images, target=None, **kwargs)
                if attr.shape[0] != n * k:
                    raise ValueError("per-output occlusion not supported")
                attr = attr.reshape(n, k, c, height, width)
            except (AssertionError, ValueError, RuntimeError):
                attr = torch.stack([occlusion.attribute(images, target=t, **kwargs) for t in range(k)], dim=1)
        raw = attr.sum(dim=2)
        if self.positive:
            raw = raw.clamp(min=0)
        return Attribution(self.name, logits=logits, maps=F.adaptive_avg_pool2d(raw.float(), size))


@register_method("metadata_ig")
class MetadataIntegratedGradients(AttributionMethod):
    """Captum `IntegratedGradients` over the metadata features (baseline zeros): (N, 14, F).

    Works for `mlp` and for `fusion` (images held fixed). Names: `Attribution.feature_names`.
    """

    input_kinds = ("metadata", "both")

    def __init__(self, model: nn.Module, *, n_steps: int = 32, internal_batch_size: int | None = None,
                 method: str = "gausslegendre") -> None:
        super().__init__(model)
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        self.n_steps, self.internal_batch_size, self.ig_method = int(n_steps), internal_batch_size, method

    def attribute(self, images: torch.Tensor | None = None,
                  features: torch.Tensor | None = None) -> Attribution:
        from captum.attr import IntegratedGradients

        images, features = self._checked(images, features)
        model = self.model
        if self.input_kind == "both":
            def forward(feats: torch.Tensor, imgs: torch.Tensor) -> torch.Tensor:
                return model(imgs, feats)
            extra: tuple[torch.Tensor, ...] | None = (images,)
        else:
            forward, extra = model, None
        with evaluation(model):
            with torch.no_grad():
                logits = forward(features, *(extra or ()))
            ig = IntegratedGradients(forward)
            with torch.enable_grad():
                per_class = [
                    ig.attribute(features, baselines=0.0, target=t, n_steps=self.n_steps, method=self.ig_method,
                                 internal_batch_size=self.internal_batch_size,
                                 additional_forward_args=extra).detach()
                    for t in range(logits.shape[1])
                ]
        meta = getattr(model, "metadata_features", None)
        names = tuple(meta.names) if meta is not None else None
        return Attribution(self.name, logits=logits, feature_attributions=torch.stack(per_class, dim=1),
                           feature_names=names)
