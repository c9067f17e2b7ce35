"""The metadata-only MLP: patient features (thorax_ray.models.features) -> 14 logits."""
from __future__ import annotations

import torch
from torch import nn

from thorax_ray.labels import NUM_FINDINGS
from thorax_ray.models.features import MetadataFeatures
from thorax_ray.models.head import Float32Linear
from thorax_ray.models.registry import register_model


class MetadataMLP(nn.Module):
    """Metadata-only model: dim -> hidden -> hidden -> 14 logits (ReLU, dropout).

    `embed(features)` gives the last hidden layer (N, hidden) (the fusion model reuses it);
    `classifier` is the final nn.Linear; `stem` the first one.
    """

    def __init__(self, metadata_features: MetadataFeatures | None = None, *, hidden: int = 64,
                 depth: int = 2, dropout: float = 0.1, num_classes: int = NUM_FINDINGS) -> None:
        super().__init__()
        if hidden < 1 or depth < 1:
            raise ValueError(f"hidden ({hidden}) and depth ({depth}) must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.metadata_features = metadata_features or MetadataFeatures()
        self.in_dim = self.metadata_features.dim
        self.hidden = hidden
        layers: list[nn.Module] = []
        width = self.in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.classifier = Float32Linear(hidden, num_classes)

    @property
    def stem(self) -> nn.Linear:
        return self.body[0]

    @property
    def embed_dim(self) -> int:
        return self.hidden

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2 or features.shape[1] != self.in_dim:
            raise ValueError(
                f"expected metadata features (N, {self.in_dim}) for {list(self.metadata_features.features)}, "
                f"got {tuple(features.shape)}"
            )
        return self.body(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(features))


@register_model("mlp", input_kind="metadata")
def mlp(*, metadata_features: MetadataFeatures | None = None, pretrained: str | None = None,
        hidden: int = 64, depth: int = 2, dropout: float = 0.1) -> MetadataMLP:
    """Metadata-only MLP: `model(features)`."""
    if pretrained is not None:
        raise ValueError("'pretrained' applies to CNN backbones; the mlp model has none")
    return MetadataMLP(metadata_features, hidden=hidden, depth=depth, dropout=dropout)
