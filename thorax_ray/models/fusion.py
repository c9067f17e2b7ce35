"""Image + metadata fusion: CNN global-pooled features ++ metadata MLP embedding -> linear -> 14 logits.

`model(images, features)`. In eval mode

    logits = classifier([mean_hw(fmap), embed(features)])
           = W_img · mean_hw(fmap) + W_meta · embed(features) + b

so `pool_and_classify(fmap, features)` is exact and the image part of a class activation map is
`W_img` (`image_classifier_weight`) applied to `fmap`. `features(images)`, `target_layer` and
`backbone` expose the image part for attributions.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from thorax_ray.labels import NUM_FINDINGS
from thorax_ray.models.cnn import ImageCNN, build_cnn
from thorax_ray.models.features import MetadataFeatures
from thorax_ray.models.head import Float32Linear
from thorax_ray.models.mlp import MetadataMLP
from thorax_ray.models.registry import DEFAULT_MODEL, register_model


class FusionModel(nn.Module):
    def __init__(self, backbone: ImageCNN, metadata_net: MetadataMLP, *, num_classes: int = NUM_FINDINGS,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.backbone = backbone
        self.metadata_net = metadata_net
        self.metadata_features = metadata_net.metadata_features
        self.image_dim = backbone.feature_dim
        self.metadata_dim = metadata_net.embed_dim
        self.feature_dim = backbone.feature_dim  # channels of the image feature map
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = Float32Linear(self.image_dim + self.metadata_dim, num_classes)
        # The backbone's own 14-way head is unused here; drop it so no parameter lacks a gradient.
        self.backbone.classifier = nn.Identity()

    @property
    def target_layer(self) -> nn.Module:
        return self.backbone.target_layer

    @property
    def stem(self) -> nn.Module:
        return self.backbone.stem

    @property
    def image_classifier_weight(self) -> torch.Tensor:
        """(14, feature_dim): the columns of `classifier.weight` acting on the pooled image features."""
        return self.classifier.weight[:, : self.image_dim]

    @property
    def metadata_classifier_weight(self) -> torch.Tensor:
        return self.classifier.weight[:, self.image_dim:]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Image feature map (N, feature_dim, h, w) of the backbone."""
        return self.backbone.features(images)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Metadata embedding (N, metadata_dim)."""
        return self.metadata_net.embed(features)

    def pool_and_classify(self, fmap: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        joint = torch.cat([self.backbone.pool(fmap), self.embed(features)], dim=1)
        return self.classifier(self.dropout(joint))

    def forward(self, images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.pool_and_classify(self.features(images), features)


@register_model("fusion", input_kind="both")
def fusion(*, metadata_features: MetadataFeatures | None = None, pretrained: str | None = None,
           backbone: str = DEFAULT_MODEL, hidden: int = 64, depth: int = 2, dropout: float = 0.1,
           drop_rate: float = 0.0, backbone_kwargs: dict[str, Any] | None = None) -> FusionModel:
    """`model(images, features)`; `pretrained` loads ImageNet-style weights into the CNN backbone.

    backbone: any image CNN name; hidden/depth/dropout: the metadata MLP; drop_rate: dropout on the
    concatenated features; backbone_kwargs: extra options of the backbone (e.g. `widths`).
    """
    cnn = build_cnn(backbone, pretrained=pretrained, **dict(backbone_kwargs or {}))
    meta = MetadataMLP(metadata_features, hidden=hidden, depth=depth, dropout=dropout)
    meta.classifier = nn.Identity()  # only its embedding is used
    model = FusionModel(cnn, meta, drop_rate=drop_rate)
    model.init = {**cnn.init, "label": f"{backbone} {cnn.init['label']}"}
    return model
