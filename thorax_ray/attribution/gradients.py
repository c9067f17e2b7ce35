"""Integrated Gradients: per-class pixel maps of the image models through Captum (`integrated_gradients`)
and feature attributions of the metadata inputs, every class at once (`metadata_ig`: one forward pass of
all inputs and steps serves the 14 classes; `CaptumMetadataIntegratedGradients` is its Captum reference)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from thorax_ray.attribution.base import (FEATURE_ATTRIBUTIONS, Attribution, AttributionMethod, PixelMapMethod,
                                         evaluation, register_method)
from thorax_ray.attribution.vectorised_ig import DEFAULT_MAX_ROWS, integrated_gradients, quadrature


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
    """Integrated Gradients over the metadata features (baseline zeros) for all 14 findings at once:
    `feature_attributions` (N, 14, F), names in `Attribution.feature_names`.

    Vectorised (`vectorised_ig.integrated_gradients`: one forward pass of every input and step, one
    backward per target through it), equal to Captum's `IntegratedGradients` run once per target
    (`CaptumMetadataIntegratedGradients`, the reference) to float rounding. Works for `mlp` and for `fusion` (images held fixed: their feature map is
    computed once, then only the metadata branch and the head run along the path). `method`: Captum's
    quadrature names (`vectorised_ig.QUADRATURE_METHODS`). `internal_batch_size`: at most this many
    interpolated rows (inputs x n_steps, at least one input's n_steps) per pass (None:
    `vectorised_ig.DEFAULT_MAX_ROWS`), bounding memory.
    """

    input_kinds = ("metadata", "both")
    produces = FEATURE_ATTRIBUTIONS

    def __init__(self, model: nn.Module, *, n_steps: int = 32, internal_batch_size: int | None = None,
                 method: str = "gausslegendre") -> None:
        super().__init__(model)
        quadrature(method, n_steps)  # one error line for an unknown method or too few steps
        if internal_batch_size is not None and internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be >= 1, got {internal_batch_size}")
        self.n_steps, self.internal_batch_size, self.ig_method = int(n_steps), internal_batch_size, method

    def attribute(self, images: torch.Tensor | None = None,
                  features: torch.Tensor | None = None) -> Attribution:
        images, features = self._checked(images, features)
        model = self.model
        with evaluation(model), torch.no_grad():
            if self.input_kind == "both":
                fmap = model.features(images)
                logits = model.pool_and_classify(fmap, features)

                def forward(feats: torch.Tensor, feature_map: torch.Tensor) -> torch.Tensor:
                    return model.pool_and_classify(feature_map, feats)

                fixed: tuple[torch.Tensor, ...] = (fmap,)
            else:
                logits = model(features)
                forward, fixed = model, ()
            values = integrated_gradients(forward, features, fixed, baselines=0.0, n_steps=self.n_steps,
                                          method=self.ig_method,
                                          max_rows=self.internal_batch_size or DEFAULT_MAX_ROWS)
        return Attribution(self.name, logits=logits, feature_attributions=values,
                           feature_names=_feature_names(model))


class CaptumMetadataIntegratedGradients(MetadataIntegratedGradients):
    """The reference `metadata_ig` (not registered; the tests and `bench/score.py` compare against it):
    Captum's `IntegratedGradients` run once per target, as `metadata_ig` ran before it was vectorised.
    Same options; `internal_batch_size` has Captum's meaning (None: all steps at once)."""

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
        return Attribution(self.name, logits=logits, feature_attributions=torch.stack(per_class, dim=1),
                           feature_names=_feature_names(model))


def _feature_names(model: nn.Module) -> tuple[str, ...] | None:
    meta = getattr(model, "metadata_features", None)
    return tuple(meta.names) if meta is not None else None
