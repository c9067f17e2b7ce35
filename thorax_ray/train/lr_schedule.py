"""The learning rate for the global batch and its per-epoch schedule.

`OptimConfig.lr` is the learning rate at `OptimConfig.base_batch` images per optimiser step (CheXNet:
1e-3 at 16). Training with a global batch B (per-rank batch x ranks) uses

    lr_scaling "none":    lr                            (lr is taken as is, whatever B)
    lr_scaling "linear":  lr * B / base_batch           (Goyal et al. 2017, for SGD)
    lr_scaling "sqrt":    lr * sqrt(B / base_batch)     (the square-root rule suited to Adam; Malladi et al. 2022)

and reaches it through `warmup_epochs` epochs of linear warm-up: epoch e < warmup_epochs runs at
(e + 1) / (warmup_epochs + 1) of it. After the warm-up the main scheduler (`OptimConfig.scheduler`:
plateau = /10 when the validation mean AUROC stops improving, cosine over the remaining epochs, none)
takes over. The schedule is stepped once per epoch (`EpochSchedule.step(metric)`).
"""
from __future__ import annotations

import math

import torch

from thorax_ray.train.config import OptimConfig

LR_SCALINGS: tuple[str, ...] = ("none", "linear", "sqrt")


def scaled_lr(lr: float, global_batch: int, base_batch: int, scaling: str) -> float:
    """The learning rate for `global_batch` images per step, given `lr` at `base_batch` (pure)."""
    if scaling not in LR_SCALINGS:
        raise ValueError(f"unknown lr_scaling {scaling!r}; expected one of {list(LR_SCALINGS)}")
    if global_batch < 1 or base_batch < 1:
        raise ValueError(f"batch sizes must be >= 1, got global {global_batch}, base {base_batch}")
    ratio = global_batch / base_batch
    if scaling == "linear":
        return lr * ratio
    if scaling == "sqrt":
        return lr * math.sqrt(ratio)
    return lr


def warmup_factor(epoch: int, warmup_epochs: int) -> float:
    """Fraction of the target learning rate that epoch `epoch` (0-based) runs at: (e + 1) / (w + 1)
    during the `w` warm-up epochs, 1 after (pure)."""
    if epoch < 0 or warmup_epochs < 0:
        raise ValueError(f"epoch and warmup_epochs must be >= 0, got {epoch}, {warmup_epochs}")
    return min(1.0, (epoch + 1) / (warmup_epochs + 1))


def effective_lr(optim: OptimConfig, global_batch: int) -> float:
    """The target learning rate of a run whose global batch is `global_batch`."""
    return scaled_lr(optim.lr, global_batch, optim.base_batch, optim.lr_scaling)


def describe_lr(optim: OptimConfig, global_batch: int) -> str:
    """One line for the start of a run: the global batch and the learning rate it gets."""
    rule = {"none": "taken as is", "linear": f"linear in batch / {optim.base_batch}",
            "sqrt": f"sqrt of batch / {optim.base_batch}"}[optim.lr_scaling]
    warmup = f", {optim.warmup_epochs} warm-up epoch(s)" if optim.warmup_epochs else ""
    return (f"global batch {global_batch}: lr {effective_lr(optim, global_batch):.3g} "
            f"(lr {optim.lr:g} {rule}{warmup}; then {optim.scheduler})")


def _main_scheduler(optim: OptimConfig, optimizer: torch.optim.Optimizer):
    if optim.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1, patience=1)
    if optim.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, optim.epochs - optim.warmup_epochs))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


class EpochSchedule:
    """Warm-up, then the main scheduler; `step(metric)` once after every epoch (the metric, the
    validation mean AUROC, is used by plateau only). The target learning rate is the optimiser's lr
    when this is built; `state_dict` / `load_state_dict` resume it exactly."""

    def __init__(self, optim: OptimConfig, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.plateau = optim.scheduler == "plateau"
        self.warmup_epochs = optim.warmup_epochs
        self.targets = [group["lr"] for group in optimizer.param_groups]
        self.main = _main_scheduler(optim, optimizer)  # built at the target lr
        self.epochs_done = 0
        self._warm()

    def _warm(self) -> None:
        factor = warmup_factor(self.epochs_done, self.warmup_epochs)
        for group, target in zip(self.optimizer.param_groups, self.targets):
            group["lr"] = target * factor

    def step(self, metric: float | None = None) -> None:
        self.epochs_done += 1
        if self.epochs_done <= self.warmup_epochs:
            self._warm()  # the last warm-up step sets the target itself
        elif self.plateau:
            self.main.step(0.0 if metric is None else metric)
        else:
            self.main.step()

    def state_dict(self) -> dict:
        return {"epochs_done": self.epochs_done, "targets": list(self.targets), "main": self.main.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "main" not in state:  # a checkpoint written before warm-up existed: the main scheduler's own state
            self.main.load_state_dict(state)
            self.epochs_done = max(self.warmup_epochs, int(state.get("last_epoch", 0)))
            return
        self.epochs_done = int(state["epochs_done"])
        self.targets = list(state["targets"])
        self.main.load_state_dict(state["main"])


def build_scheduler(optim: OptimConfig, optimizer: torch.optim.Optimizer) -> EpochSchedule:
    return EpochSchedule(optim, optimizer)
