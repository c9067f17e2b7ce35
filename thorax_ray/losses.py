"""Multi-label losses on logits (N, 14) and 0/1 float targets (N, 14); every loss is a mean over
all N * 14 terms (a constant factor away from the per-image sums of the papers).

kinds
-----
``bce``                 `nn.BCEWithLogitsLoss()` (CheXNet's loss).
``wang_bce``            Wang et al. 2017 (ChestX-ray8), eq. 1: ONE pair of weights per batch, pooled over
                        all classes. With |P| and |N| the numbers of 1s and 0s in the batch's (N, 14)
                        label matrix, beta_P = (|P|+|N|)/|P| weighs every positive term and
                        beta_N = (|P|+|N|)/|N| every negative term. A batch without positives (or without
                        negatives) has no terms of that kind, so the loss is plain BCE there. Under DDP
                        "the batch" is each rank's local batch. No options.
``class_balanced_bce``  per-CLASS positive/negative balancing with weights fixed from the whole training
                        split's label counts (not Wang et al.'s scheme): class c with |P_c| positives and
                        |N_c| negatives gets beta_P,c = (|P_c|+|N_c|)/|P_c| on its positive terms and
                        beta_N,c = (|P_c|+|N_c|)/|N_c| on its negative terms (1 where |P_c| = 0 or
                        |N_c| = 0), so a 0.2 % class such as Hernia weighs its positives ~500x (Wang's
                        pooled weight is ~19: 1,569,680 labels / 81,176 positive ones in NIH's published
                        counts, over the whole dataset; per batch it varies around that). Positive weights
                        are then replaced per class by `per_class_pos_weight` (if given) and multiplied by
                        `pos_weight_scale`. Without label counts (allowed only with `per_class_pos_weight`)
                        negative weights are 1.
``focal``               sigmoid focal loss (Lin et al. 2017) as `torchvision.ops.sigmoid_focal_loss`:
                        BCE * (1 - p_t)^gamma, times alpha_t = alpha·y + (1-alpha)·(1-y) when
                        `focal_alpha` is set; gamma = 0 and alpha = None is exactly BCE.

``weighted_bce`` (the former name of ``class_balanced_bce``, which it described as Wang et al.'s) is
rejected with an error naming both new kinds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from thorax_ray.labels import NUM_FINDINGS

LOSS_KINDS: tuple[str, ...] = ("bce", "wang_bce", "class_balanced_bce", "focal")
REMOVED_KINDS: dict[str, str] = {
    "weighted_bce": ("loss kind 'weighted_bce' was removed: it named per-class weights from the training split, "
                     "which is not Wang et al. 2017's scheme. Use 'wang_bce' (Wang et al. 2017: one pair of "
                     "weights per batch, pooled over all classes) or 'class_balanced_bce' (the former per-class "
                     "weights from the training label counts, with pos_weight_scale / per_class_pos_weight)"),
}


@dataclass(frozen=True)
class LossConfig:
    kind: Literal["bce", "wang_bce", "class_balanced_bce", "focal"] = "bce"
    pos_weight_scale: float = 1.0  # class_balanced_bce only
    per_class_pos_weight: tuple[float, ...] | None = None  # class_balanced_bce only
    focal_gamma: float = 2.0
    focal_alpha: float | None = None

    def __post_init__(self) -> None:
        if self.kind in REMOVED_KINDS:
            raise ValueError(REMOVED_KINDS[self.kind])
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"unknown loss kind {self.kind!r}; expected one of {list(LOSS_KINDS)}")
        scale = float(self.pos_weight_scale)
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"pos_weight_scale must be a finite number > 0, got {self.pos_weight_scale!r}")
        object.__setattr__(self, "pos_weight_scale", scale)
        if self.per_class_pos_weight is not None:
            weights = tuple(float(w) for w in self.per_class_pos_weight)
            if len(weights) != NUM_FINDINGS:
                raise ValueError(
                    f"per_class_pos_weight needs {NUM_FINDINGS} values (one per finding), got {len(weights)}"
                )
            if any(not math.isfinite(w) or w < 0 for w in weights):
                raise ValueError(f"per_class_pos_weight values must be finite and >= 0, got {weights}")
            object.__setattr__(self, "per_class_pos_weight", weights)
        weighted = self.pos_weight_scale != 1.0 or self.per_class_pos_weight is not None
        if self.kind != "class_balanced_bce" and weighted:
            raise ValueError(
                f"pos_weight_scale / per_class_pos_weight apply to kind 'class_balanced_bce' only, not {self.kind!r}"
            )
        gamma = float(self.focal_gamma)
        if not math.isfinite(gamma) or gamma < 0:
            raise ValueError(f"focal_gamma must be a finite number >= 0, got {self.focal_gamma!r}")
        object.__setattr__(self, "focal_gamma", gamma)
        if self.focal_alpha is not None:
            alpha = float(self.focal_alpha)
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f"focal_alpha must be in [0, 1] or None, got {self.focal_alpha!r}")
            object.__setattr__(self, "focal_alpha", alpha)


def _check_shapes(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")


class WangBCEWithLogitsLoss(nn.Module):
    """Wang et al. 2017's weighted cross-entropy: beta_P / beta_N from the counts of 1s and 0s in THIS
    batch's label matrix (all classes pooled); mean over all terms of
    -(beta_P·y·log σ(x) + beta_N·(1-y)·log(1-σ(x)))."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check_shapes(logits, targets)
        targets = targets.to(logits.dtype)
        beta_p, beta_n = wang_batch_weights(targets)
        terms = beta_p * targets * F.logsigmoid(logits) + beta_n * (1 - targets) * F.logsigmoid(-logits)
        return -terms.mean()


def wang_batch_weights(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(beta_P, beta_N) of one batch: (|P|+|N|)/|P| and (|P|+|N|)/|N| over the whole label matrix; a
    count of 0 leaves that weight at (|P|+|N|) / 1, which multiplies no term."""
    with torch.no_grad():
        total = torch.tensor(float(targets.numel()), dtype=targets.dtype, device=targets.device)
        positives = targets.sum()
        negatives = total - positives
        return total / positives.clamp(min=1), total / negatives.clamp(min=1)


class WeightedBCEWithLogitsLoss(nn.Module):
    """mean over all terms of -(w_pos[c]·y·log σ(x) + w_neg[c]·(1-y)·log(1-σ(x))) with fixed per-class
    weights (`class_balanced_bce`)."""

    def __init__(self, pos_weight: torch.Tensor | np.ndarray, neg_weight: torch.Tensor | np.ndarray) -> None:
        super().__init__()
        self.register_buffer("pos_weight", torch.as_tensor(pos_weight, dtype=torch.float32).clone())
        self.register_buffer("neg_weight", torch.as_tensor(neg_weight, dtype=torch.float32).clone())

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check_shapes(logits, targets)
        targets = targets.to(logits.dtype)
        pos = self.pos_weight.to(logits.dtype)
        neg = self.neg_weight.to(logits.dtype)
        terms = pos * targets * F.logsigmoid(logits) + neg * (1 - targets) * F.logsigmoid(-logits)
        return -terms.mean()

    def extra_repr(self) -> str:
        return f"classes={self.pos_weight.numel()}"


class SigmoidFocalLoss(nn.Module):
    """`torchvision.ops.sigmoid_focal_loss(reduction="mean")`: mean of BCE(x, y) · (1 - p_t)^gamma
    [· alpha_t]; p_t = σ(x) for y = 1 and 1 - σ(x) for y = 0; alpha None = no alpha_t."""

    def __init__(self, gamma: float = 2.0, alpha: float | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else float(alpha)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check_shapes(logits, targets)
        return sigmoid_focal_loss(logits, targets.to(logits.dtype), alpha=-1 if self.alpha is None else self.alpha,
                                  gamma=self.gamma, reduction="mean")

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}"


def class_balanced_weights(label_counts: np.ndarray, num_samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(beta_P, beta_N) per class (float64) for `class_balanced_bce`: Wang et al.'s ratios computed per class
    over the training split (not Wang's per-batch pooled weights; see `wang_batch_weights`).

    `label_counts`: positives per class (C,) with `num_samples` rows in all, or a 0/1 label
    matrix (num_samples, C). A class with no positives (or no negatives) gets weight 1 there.
    """
    counts = np.asarray(label_counts, dtype=np.float64)
    if counts.ndim == 2:
        if num_samples is not None and num_samples != counts.shape[0]:
            raise ValueError(f"num_samples {num_samples} differs from the label matrix's {counts.shape[0]} rows")
        num_samples = counts.shape[0]
        counts = counts.sum(axis=0)
    elif counts.ndim != 1:
        raise ValueError(f"label_counts must be (C,) counts or an (N, C) label matrix, got shape {counts.shape}")
    if num_samples is None:
        raise ValueError("num_samples is needed with per-class positive counts")
    total = float(num_samples)
    if not np.all(np.isfinite(counts)) or np.any(counts < 0) or np.any(counts > total):
        raise ValueError(f"positive counts must lie in [0, num_samples={num_samples}], got {counts.tolist()}")
    negatives = total - counts
    with np.errstate(divide="ignore", invalid="ignore"):
        beta_p = np.where(counts > 0, total / np.where(counts > 0, counts, 1.0), 1.0)
        beta_n = np.where(negatives > 0, total / np.where(negatives > 0, negatives, 1.0), 1.0)
    return beta_p, beta_n


def build_loss(config: LossConfig | None = None, label_counts: np.ndarray | None = None,
               num_samples: int | None = None) -> nn.Module:
    """The loss module for `config`; `label_counts`/`num_samples` (training split) for class_balanced_bce."""
    config = config or LossConfig()
    if config.kind == "bce":
        return nn.BCEWithLogitsLoss()
    if config.kind == "focal":
        return SigmoidFocalLoss(config.focal_gamma, config.focal_alpha)
    if config.kind == "wang_bce":
        return WangBCEWithLogitsLoss()
    # class_balanced_bce
    if label_counts is not None:
        beta_p, beta_n = class_balanced_weights(label_counts, num_samples)
        if beta_p.shape[0] != NUM_FINDINGS:
            raise ValueError(f"label counts cover {beta_p.shape[0]} classes, expected {NUM_FINDINGS}")
    elif config.per_class_pos_weight is not None:
        beta_p, beta_n = np.ones(NUM_FINDINGS), np.ones(NUM_FINDINGS)
    else:
        raise ValueError("class_balanced_bce needs the training label counts (label_counts, num_samples) "
                         "or per_class_pos_weight")
    pos = beta_p if config.per_class_pos_weight is None else np.asarray(config.per_class_pos_weight, np.float64)
    return WeightedBCEWithLogitsLoss(pos * config.pos_weight_scale, beta_n)
