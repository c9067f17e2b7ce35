"""Losses: BCE, Wang et al. 2017 per-batch weighted BCE, class-balanced BCE, sigmoid focal loss; config validation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from thorax_ray.labels import NUM_FINDINGS
from thorax_ray.losses import (LossConfig, SigmoidFocalLoss, WangBCEWithLogitsLoss, WeightedBCEWithLogitsLoss,
                               build_loss, class_balanced_weights)

LN2 = math.log(2.0)


def _label_matrix() -> np.ndarray:
    """4 samples: class 0 has 1 positive, class 1 has 2, class 2 none, class 3 all; 4..13 none."""
    labels = np.zeros((4, NUM_FINDINGS), dtype=np.float32)
    labels[0, 0] = 1
    labels[[0, 1], 1] = 1
    labels[:, 3] = 1
    return labels


def test_bce_hand_computed():
    logits = torch.zeros(2, NUM_FINDINGS)
    targets = torch.zeros(2, NUM_FINDINGS)
    logits[0, 0], targets[0, 0] = 2.0, 1.0
    logits[1, 1], targets[1, 1] = -1.0, 1.0
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0)) + 26 * LN2) / 28
    loss = build_loss(LossConfig())(logits, targets)
    assert isinstance(build_loss(LossConfig()), nn.BCEWithLogitsLoss)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_class_balanced_weights_for_known_label_matrix():
    beta_p, beta_n = class_balanced_weights(_label_matrix())
    assert beta_p[:4].tolist() == pytest.approx([4.0, 2.0, 1.0, 1.0])  # (P+N)/P; P=0 -> 1
    assert beta_n[:4].tolist() == pytest.approx([4 / 3, 2.0, 1.0, 1.0])  # (P+N)/N; N=0 -> 1
    assert np.all(beta_p[4:] == 1.0) and np.all(beta_n[4:] == 1.0)
    counts_p, counts_n = class_balanced_weights(_label_matrix().sum(0), num_samples=4)
    np.testing.assert_allclose(counts_p, beta_p)
    np.testing.assert_allclose(counts_n, beta_n)


def test_class_balanced_bce_hand_computed():
    labels = _label_matrix()
    loss_fn = build_loss(LossConfig(kind="class_balanced_bce"), labels.sum(0), num_samples=4)
    assert isinstance(loss_fn, WeightedBCEWithLogitsLoss)
    loss = loss_fn(torch.zeros(4, NUM_FINDINGS), torch.from_numpy(labels))
    # every term is ln 2 times its weight: classes 0 and 1 sum to 2 (P+N) = 8, the other 12 to 4 each
    assert loss.item() == pytest.approx(LN2 * (8 + 8 + 12 * 4) / 56, rel=1e-6)
    # a non-trivial logit: one positive term of class 0 at x = 1 weighs 4
    logits = torch.zeros(4, NUM_FINDINGS)
    logits[0, 0] = 1.0
    shifted = loss_fn(logits, torch.from_numpy(labels))
    delta = 4.0 * (math.log1p(math.exp(-1.0)) - LN2) / 56
    assert shifted.item() == pytest.approx(loss.item() + delta, rel=1e-6)


def test_class_balanced_bce_scale_and_per_class_override():
    labels = _label_matrix()
    scaled = build_loss(LossConfig(kind="class_balanced_bce", pos_weight_scale=2.0), labels)
    assert scaled.pos_weight[:4].tolist() == pytest.approx([8.0, 4.0, 2.0, 2.0])
    assert scaled.neg_weight[:2].tolist() == pytest.approx([4 / 3, 2.0])
    override = tuple(float(i) for i in range(NUM_FINDINGS))
    loss_fn = build_loss(LossConfig(kind="class_balanced_bce", per_class_pos_weight=override, pos_weight_scale=0.5),
                         labels)
    assert loss_fn.pos_weight.tolist() == pytest.approx([0.5 * i for i in range(NUM_FINDINGS)])
    assert loss_fn.neg_weight[0].item() == pytest.approx(4 / 3)
    no_counts = build_loss(LossConfig(kind="class_balanced_bce", per_class_pos_weight=override))
    assert no_counts.neg_weight.tolist() == [1.0] * NUM_FINDINGS
    # with weights 1 everywhere weighted BCE is plain BCE
    ones = build_loss(LossConfig(kind="class_balanced_bce", per_class_pos_weight=(1.0,) * NUM_FINDINGS))
    logits, targets = torch.randn(3, NUM_FINDINGS), torch.randint(0, 2, (3, NUM_FINDINGS)).float()
    torch.testing.assert_close(ones(logits, targets), nn.functional.binary_cross_entropy_with_logits(logits, targets))


def test_wang_bce_hand_computed_pools_one_pair_of_weights_over_the_batch():
    """Wang et al. 2017 eq. 1: |P| = 7 ones and |N| = 49 zeros in the 4 x 14 label matrix give
    beta_P = 56/7 = 8 on every positive term and beta_N = 56/49 on every negative term, whatever the class."""
    labels = torch.from_numpy(_label_matrix())  # 1 + 2 + 4 = 7 positives
    loss_fn = build_loss(LossConfig(kind="wang_bce"))
    assert isinstance(loss_fn, WangBCEWithLogitsLoss)
    logits = torch.zeros(4, NUM_FINDINGS)
    logits[0, 0], logits[1, 5] = 1.0, -2.0  # one positive term (class 0) and one negative term (class 5) moved
    positive_terms = 6 * LN2 + math.log1p(math.exp(-1.0))
    negative_terms = 48 * LN2 + math.log1p(math.exp(-2.0))
    expected = (8.0 * positive_terms + 56 / 49 * negative_terms) / 56
    assert loss_fn(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # the same labels as per-class training counts would weigh class 0's positive by 4 and class 1's by 2:
    # the pooled loss does not depend on which class a positive sits in
    moved = labels.clone()
    moved[0, 0], moved[0, 2] = 0.0, 1.0
    assert loss_fn(torch.zeros(4, NUM_FINDINGS), moved).item() == pytest.approx(
        loss_fn(torch.zeros(4, NUM_FINDINGS), labels).item(), rel=1e-6)
    # Hernia-like rarity: one positive among 16 x 14 labels weighs (224 / 1), not the per-class 16 / 1
    rare = torch.zeros(16, NUM_FINDINGS)
    rare[0, 13] = 1.0
    x = torch.zeros(16, NUM_FINDINGS)
    assert loss_fn(x, rare).item() == pytest.approx((224.0 * LN2 + 223 * (224 / 223) * LN2) / 224, rel=1e-6)


def test_wang_bce_batch_without_positives_or_negatives_is_plain_bce():
    loss_fn = build_loss(LossConfig(kind="wang_bce"))
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, NUM_FINDINGS, generator=gen, requires_grad=True)
    for targets in (torch.zeros(3, NUM_FINDINGS), torch.ones(3, NUM_FINDINGS)):
        loss = loss_fn(logits, targets)
        torch.testing.assert_close(loss, nn.functional.binary_cross_entropy_with_logits(logits, targets))
        loss.backward()
        assert torch.isfinite(logits.grad).all()


def test_removed_weighted_bce_name_points_to_both_new_kinds():
    with pytest.raises(ValueError, match="'wang_bce'.*'class_balanced_bce'"):
        LossConfig(kind="weighted_bce")
    from thorax_ray.config_io import ConfigError
    from thorax_ray.train.config import TrainConfig

    with pytest.raises(ConfigError, match="was removed"):
        TrainConfig.from_dict({"loss": {"kind": "weighted_bce"}})


def test_zero_positive_class_gives_finite_loss_and_gradient():
    counts = np.zeros(NUM_FINDINGS)
    counts[0] = 10  # all other classes have no positives; class 0 is all positives
    loss_fn = build_loss(LossConfig(kind="class_balanced_bce"), counts, num_samples=10)
    assert torch.isfinite(loss_fn.pos_weight).all() and torch.isfinite(loss_fn.neg_weight).all()
    logits = torch.randn(2, NUM_FINDINGS, requires_grad=True)
    loss = loss_fn(logits, torch.zeros(2, NUM_FINDINGS))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_focal_hand_computed():
    logits = torch.zeros(1, NUM_FINDINGS)
    targets = torch.zeros(1, NUM_FINDINGS)
    logits[0, 0], targets[0, 0] = 0.0, 1.0  # p_t = 0.5
    logits[0, 1] = 2.0  # y = 0, p = σ(2), p_t = 1 - σ(2)
    p = 1 / (1 + math.exp(-2.0))
    terms = [LN2 * 0.25, math.log1p(math.exp(2.0)) * p ** 2] + [LN2 * 0.25] * 12  # x = 0, y = 0
    loss = build_loss(LossConfig(kind="focal", focal_gamma=2.0))(logits, targets)
    assert isinstance(build_loss(LossConfig(kind="focal")), SigmoidFocalLoss)
    assert loss.item() == pytest.approx(sum(terms) / NUM_FINDINGS, rel=1e-6)
    alpha = [0.25] + [0.75] * 13
    weighted = build_loss(LossConfig(kind="focal", focal_gamma=2.0, focal_alpha=0.25))(logits, targets)
    assert weighted.item() == pytest.approx(sum(a * t for a, t in zip(alpha, terms)) / NUM_FINDINGS, rel=1e-6)


def test_focal_gamma_zero_equals_bce():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, NUM_FINDINGS, generator=gen) * 3
    targets = torch.randint(0, 2, (4, NUM_FINDINGS), generator=gen).float()
    focal = build_loss(LossConfig(kind="focal", focal_gamma=0.0))(logits, targets)
    bce = build_loss(LossConfig())(logits, targets)
    torch.testing.assert_close(focal, bce)
    # large logits stay finite with gamma > 0
    big = build_loss(LossConfig(kind="focal"))(torch.full((1, NUM_FINDINGS), 80.0), torch.zeros(1, NUM_FINDINGS))
    assert torch.isfinite(big)


def test_config_validation():
    with pytest.raises(ValueError, match="unknown loss kind 'hinge'"):
        LossConfig(kind="hinge")
    with pytest.raises(ValueError, match="focal_gamma"):
        LossConfig(kind="focal", focal_gamma=-1.0)
    with pytest.raises(ValueError, match="focal_alpha"):
        LossConfig(kind="focal", focal_alpha=1.5)
    with pytest.raises(ValueError, match="needs 14 values"):
        LossConfig(kind="class_balanced_bce", per_class_pos_weight=(1.0, 2.0))
    with pytest.raises(ValueError, match="finite and >= 0"):
        LossConfig(kind="class_balanced_bce", per_class_pos_weight=(-1.0,) * NUM_FINDINGS)
    with pytest.raises(ValueError, match="pos_weight_scale"):
        LossConfig(kind="class_balanced_bce", pos_weight_scale=0.0)
    with pytest.raises(ValueError, match="class_balanced_bce' only"):
        LossConfig(kind="bce", pos_weight_scale=2.0)
    with pytest.raises(ValueError, match="needs the training label counts"):
        build_loss(LossConfig(kind="class_balanced_bce"))
    with pytest.raises(ValueError, match="num_samples is needed"):
        build_loss(LossConfig(kind="class_balanced_bce"), np.ones(NUM_FINDINGS))
    with pytest.raises(ValueError, match="must lie in"):
        build_loss(LossConfig(kind="class_balanced_bce"), np.full(NUM_FINDINGS, 5), num_samples=3)
    with pytest.raises(ValueError, match="expected 14"):
        build_loss(LossConfig(kind="class_balanced_bce"), np.ones(3), num_samples=3)
    with pytest.raises(ValueError, match="differ in shape"):
        build_loss(LossConfig(kind="focal"))(torch.zeros(2, NUM_FINDINGS), torch.zeros(2, 3))


def test_config_dict_round_trip():
    """The loss options travel inside TrainConfig's dict (the Ray boundary) and come back equal."""
    from thorax_ray.config_io import ConfigError
    from thorax_ray.train.config import TrainConfig

    config = LossConfig(kind="class_balanced_bce", per_class_pos_weight=[2.0] * NUM_FINDINGS, pos_weight_scale=3)
    assert config.per_class_pos_weight == (2.0,) * NUM_FINDINGS and config.pos_weight_scale == 3.0
    assert TrainConfig.from_dict(TrainConfig(loss=config).to_dict()).loss == config
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig.from_dict({"loss": {"kind": "bce", "gamma": 1}})
