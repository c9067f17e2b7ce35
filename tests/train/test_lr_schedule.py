"""The learning rate for the global batch (none / linear / sqrt scaling), linear warm-up, and the
per-epoch schedule that follows it."""
from __future__ import annotations

import math

import pytest
import torch

from thorax_ray.config_io import ConfigError
from thorax_ray.train.config import OptimConfig, TrainConfig
from thorax_ray.train.lr_schedule import build_scheduler, describe_lr, effective_lr, scaled_lr, warmup_factor


def test_scaled_lr_rules_hand_computed():
    # CheXNet's 1e-3 at batch 16, trained with 8 ranks x 128 = 1024 images per step (64 x the base batch)
    assert scaled_lr(1e-3, 1024, 16, "none") == 1e-3
    assert scaled_lr(1e-3, 1024, 16, "linear") == pytest.approx(0.064)
    assert scaled_lr(1e-3, 1024, 16, "sqrt") == pytest.approx(0.008)
    assert scaled_lr(1e-3, 16, 16, "sqrt") == pytest.approx(1e-3)
    assert scaled_lr(4e-4, 8, 32, "sqrt") == pytest.approx(2e-4)
    with pytest.raises(ValueError, match="unknown lr_scaling"):
        scaled_lr(1e-3, 16, 16, "cubic")
    optim = OptimConfig(lr=1e-3, lr_scaling="sqrt", base_batch=16)
    assert effective_lr(optim, 64) == pytest.approx(2e-3)
    line = describe_lr(OptimConfig(lr=1e-3, lr_scaling="sqrt", warmup_epochs=2, epochs=5), 1024)
    assert "global batch 1024" in line and "lr 0.008" in line and "2 warm-up" in line


def test_warmup_factor():
    assert [warmup_factor(e, 3) for e in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def _lrs(optim: OptimConfig, metrics=None) -> list[float]:
    """The lr each epoch trains at, with step(metric) after every epoch, as the training loop does."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=effective_lr(optim, 64))
    schedule = build_scheduler(optim, optimizer)
    out = []
    for epoch in range(optim.epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step(None if metrics is None else metrics[epoch])
    return out


def test_warmup_then_cosine_and_then_plateau():
    cosine = _lrs(OptimConfig(epochs=6, lr=1e-3, lr_scaling="sqrt", warmup_epochs=2, scheduler="cosine"))
    target = 2e-3  # sqrt(64 / 16) x 1e-3
    assert cosine[:3] == pytest.approx([target / 3, 2 * target / 3, target])
    remaining = 4  # cosine over the epochs after the warm-up
    assert cosine[3:] == pytest.approx([target * (1 + math.cos(math.pi * k / remaining)) / 2 for k in (1, 2, 3)])
    plateau = _lrs(OptimConfig(epochs=7, lr=1e-3, warmup_epochs=1, scheduler="plateau"),
                   metrics=[0.5, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7])
    # the warm-up epoch's low metric is not a plateau; then /10 after two epochs without improvement
    assert plateau == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4])
    assert _lrs(OptimConfig(epochs=3, lr=1e-3, scheduler="none")) == pytest.approx([1e-3] * 3)


def test_schedule_resumes_exactly_from_its_state():
    optim = OptimConfig(epochs=6, lr=1e-3, warmup_epochs=2, scheduler="cosine")
    full = _lrs(optim)
    first = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=effective_lr(optim, 64))
    schedule = build_scheduler(optim, first)
    for _ in range(3):
        first.step()
        schedule.step()
    second = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=effective_lr(optim, 64))
    resumed = build_scheduler(optim, second)
    second.load_state_dict(first.state_dict())
    resumed.load_state_dict(schedule.state_dict())
    rest = []
    for _ in range(3):
        rest.append(second.param_groups[0]["lr"])
        second.step()
        resumed.step()
    assert rest == pytest.approx(full[3:])


def test_optim_config_validation_and_round_trip():
    config = TrainConfig().replace(optim={"lr_scaling": "linear", "base_batch": 32, "warmup_epochs": 2,
                                          "betas": [0.8, 0.99]})
    assert TrainConfig.from_dict(config.to_dict()) == config and config.optim.betas == (0.8, 0.99)
    assert OptimConfig().lr_scaling == "none" and OptimConfig().betas == (0.9, 0.999)
    for bad, message in (({"lr_scaling": "cubic"}, "unknown lr_scaling"), ({"warmup_epochs": 10}, "warmup_epochs"),
                         ({"base_batch": 0}, "base_batch"), ({"betas": [0.9, 1.0]}, "betas")):
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_dict({"optim": bad})
