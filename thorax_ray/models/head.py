"""The classifier layer every model ends with, computed in float32 even under bf16/fp16 autocast: in bf16 the
logits keep 8 significant bits, so a finding's probabilities take only ~500 distinct values, too coarse for
ranking metrics, calibration and thresholds. The pooled features are cast up first; the layer's parameters
and state_dict are nn.Linear's, so checkpoints are unchanged."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Float32Linear(nn.Linear):
    """nn.Linear whose forward runs in float32 with autocast off (its output is float32)."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(inputs.device.type, enabled=False):
            bias = None if self.bias is None else self.bias.float()
            return F.linear(inputs.float(), self.weight.float(), bias)
