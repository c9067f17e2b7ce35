"""Class activation maps from one forward pass (`cam`: raw, `fast_cam`: ReLU'd) and Captum Grad-CAM (`gradcam`).

For a network ending in global average pooling and a linear layer,

    logits_c = sum_k W[c, k] · mean_hw(A_k) + b_c

so dlogit_c / dA_k[i, j] = W[c, k] / (h·w) everywhere, Grad-CAM's channel weights are
alpha_k^c = W[c, k] / (h·w), and Grad-CAM's map is

    ReLU(sum_k W[c, k] / (h·w) · A_k)

which is CAM (Zhou et al. 2016) up to the positive constant 1/(h·w). `fast_cam` computes exactly
that scaled map for all 14 classes from ONE forward pass (no backward), together with the logits
of the same pass: its raw maps equal Captum's `LayerGradCam(model, model.target_layer)` per-class
maps (relu_attributions=True), and before the ReLU a map sums to logit_c - b_c (image part only,
for fusion). `cam` is the same map without the ReLU: the class activation map of Zhou et al. 2016 that
Wang et al. 2017 (ChestX-ray8, section 3.2) normalise to [0, 255] and threshold into boxes; it equals
Captum's LayerGradCam with relu_attributions=False. For `fusion` W is `model.image_classifier_weight`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from thorax_ray.attribution.base import (Attribution, AttributionMethod, evaluation, logits_and_feature_map,
                                         register_method)


def cam_weight(model: nn.Module) -> torch.Tensor:
    """(K, C): the linear weights acting on the pooled image feature map."""
    weight = getattr(model, "image_classifier_weight", None)
    if weight is None:
        classifier = getattr(model, "classifier", None)
        if not isinstance(classifier, nn.Linear):
            raise ValueError(f"{type(model).__name__} has no linear `classifier` / `image_classifier_weight`; "
                             "CAM needs global average pooling followed by one linear layer")
        weight = classifier.weight
    return weight


def class_activation_maps(model: nn.Module, images: torch.Tensor, features: torch.Tensor | None = None,
                          *, relu: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, K) and Grad-CAM-equal maps (N, K, h, w) from one forward pass (call under no_grad);
    `relu=False` keeps the raw class activation (Grad-CAM with relu_attributions=False)."""
    logits, fmap = logits_and_feature_map(model, images, features)
    weight = cam_weight(model).to(fmap.dtype)
    h, w = fmap.shape[-2:]
    maps = torch.einsum("kc,nchw->nkhw", weight, fmap) / float(h * w)
    return logits, F.relu(maps) if relu else maps


def _check_cam_model(model: nn.Module, name: str) -> None:
    for attr in ("features", "pool_and_classify", "target_layer"):
        if not hasattr(model, attr):
            raise ValueError(f"{name} needs an ImageCNN-like model with `{attr}`; {type(model).__name__} has none")


@register_method("fast_cam")
class FastCAM(AttributionMethod):
    """CAM for all classes and the logits from one forward pass under `torch.no_grad()`.

    relu=True: Grad-CAM's positive evidence only; a class whose activation is negative everywhere (common for
    a finding the model deems absent, even where it is) gets an all-zero map. relu=False: the raw class
    activation, where the highest values mark where the evidence for the class is strongest even when it
    is negative overall (the CAM of Zhou et al. 2016 that Wang et al. 2017 normalise and threshold into boxes).
    """

    def __init__(self, model: nn.Module, *, relu: bool = True) -> None:
        super().__init__(model)
        _check_cam_model(model, self.name)
        cam_weight(model)  # validates
        self.relu = relu

    def attribute(self, images: torch.Tensor | None = None,
                  features: torch.Tensor | None = None) -> Attribution:
        images, features = self._checked(images, features)
        with evaluation(self.model), torch.no_grad():
            logits, maps = class_activation_maps(self.model, images, features, relu=self.relu)
        return Attribution(self.name, logits=logits, maps=maps)


@register_method("cam")
class RawCAM(FastCAM):
    """`fast_cam` without the ReLU (Zhou et al. 2016's CAM, the heatmap of Wang et al. 2017): where the
    evidence for a class is strongest, even when it is negative everywhere (a ReLU'd map is then all zero,
    and no box can be drawn from it)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, relu=False)


@register_method("gradcam")
class GradCAM(AttributionMethod):
    """Captum `LayerGradCam` on `model.target_layer` (or `layer`), one backward pass per class.

    Maps are Captum's (N, 1, h, w) per-class outputs (relu_attributions=True) stacked to (N, K, h, w);
    the logits are those of the first class's forward pass.
    """

    def __init__(self, model: nn.Module, *, layer: nn.Module | None = None, relu: bool = True) -> None:
        super().__init__(model)
        if layer is None:
            _check_cam_model(model, self.name)
        self.layer = layer
        self.relu = relu

    def attribute(self, images: torch.Tensor | None = None,
                  features: torch.Tensor | None = None) -> Attribution:
        from captum.attr import LayerGradCam  # deferred: Captum (heavy, optional)

        images, features = self._checked(images, features)
        model = self.model
        seen: list[torch.Tensor] = []

        def forward(*args: torch.Tensor) -> torch.Tensor:
            out = model(*args)
            if not seen:
                seen.append(out.detach())
            return out

        with evaluation(model):
            layer = self.layer if self.layer is not None else model.target_layer
            gradcam = LayerGradCam(forward, layer)
            # Inputs requiring grad give the layer output a graph even when parameters are frozen.
            inputs = images.clone().requires_grad_(True)
            with torch.enable_grad():
                first = gradcam.attribute(inputs, target=0, relu_attributions=self.relu,
                                          additional_forward_args=self._image_forward_args(features))
                per_class = [first.detach()]
                for target in range(1, seen[0].shape[1]):
                    attr = gradcam.attribute(inputs, target=target, relu_attributions=self.relu,
                                             additional_forward_args=self._image_forward_args(features))
                    per_class.append(attr.detach())
        maps = torch.cat(per_class, dim=1)
        return Attribution(self.name, logits=seen[0], maps=maps)
