"""Gradient attributions through Captum's IntegratedGradients: per-class pixel maps of the image models
(`integrated_gradients`) and feature attributions of the metadata inputs (`metadata_ig`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from thorax_ray.attribution.base import Attribution, AttributionMethod, PixelMapMethod, evaluation, register_method


@register_method("integrated_gradients")
class IntegratedGradientsMaps(PixelMapMethod):
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
        from captum.attr import IntegratedGradients  # deferred: Captum (heavy, optional)

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
        from captum.attr import IntegratedGradients  # deferred: Captum (heavy, optional)

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
