"""Perturbation attributions through Captum's Occlusion (`occlusion`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from thorax_ray.attribution.base import Attribution, PixelMapMethod, evaluation, pair, register_method


@register_method("occlusion")
class OcclusionMaps(PixelMapMethod):
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
        from captum.attr import Occlusion  # deferred: Captum (heavy, optional)

        images, features = self._checked(images, features)
        n, c, height, width = images.shape
        window = pair(self.window, (max(1, height // 8), max(1, width // 8)), "window")
        stride = pair(self.stride, (max(1, height // 16), max(1, width // 16)), "stride")
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
