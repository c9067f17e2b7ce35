"""Adam's hyperparameters for the global batch, and the learning rate's per-epoch schedule.

`OptimConfig.lr`, `betas` and `eps` are Adam's at `OptimConfig.base_batch` images per optimiser step
(CheXNet: lr 1e-3, betas (0.9, 0.999), eps 1e-8 at 16). Training with a global batch B (per-rank batch x
ranks), kappa = B / base_batch, uses

    lr_scaling "none":    lr, betas, eps as given, whatever B
    lr_scaling "linear":  lr * kappa                    (Goyal et al. 2017, "Accurate, Large Minibatch SGD":
                                                         SGD with momentum, with warm-up; not derived for Adam)
    lr_scaling "sqrt":    Adam's square-root scaling rule (Malladi, Lyu, Panigrahi, Arora 2022, "On the SDEs
                          and Scaling Rules for Adaptive Gradient Algorithms", NeurIPS): lr * sqrt(kappa),
                          beta_i -> 1 - kappa * (1 - beta_i), eps -> eps / sqrt(kappa)

The square-root rule keeps Adam's SDE approximation when the batch changes; it is defined only while every
rescaled beta stays in [0, 1), i.e. kappa < 1 / (1 - beta1) (10 at CheXNet's beta1 = 0.9), and Malladi et al.
validate it for moderate kappa only: it stops holding once the batch is so large that gradient noise no longer
dominates. `lr_rule_problem` names a run outside that range in one line (the training job refuses it before
Ray starts). The target learning rate is reached through `warmup_epochs` epochs of linear warm-up: epoch
e < warmup_epochs runs at (e + 1) / (warmup_epochs + 1) of it. After the warm-up the main scheduler
(`OptimConfig.scheduler`: plateau = /10 when the validation metric `OptimConfig.select_by` stops improving
for `patience` epochs (CheXNet: the validation loss, patience 1), cosine over the remaining epochs, none)
takes over. The schedule is stepped once per epoch (`EpochSchedule.step(metric)`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from thorax_ray.train.config import LOWER_IS_BETTER, OptimConfig

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


@dataclass(frozen=True)
class AdamSettings:
    lr: float
    betas: tuple[float, float]
    eps: float

    def as_kwargs(self) -> dict:
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps}


def adam_settings(optim: OptimConfig, global_batch: int) -> AdamSettings:
    """Adam's lr, betas and eps for `global_batch` images per step under `optim.lr_scaling` (module docstring);
    only the square-root rule rescales betas and eps. Betas are clamped to [0, 1) outside the rule's range,
    which `lr_rule_problem` reports."""
    lr = effective_lr(optim, global_batch)
    if optim.lr_scaling != "sqrt":
        return AdamSettings(lr, tuple(optim.betas), optim.eps)
    kappa = global_batch / optim.base_batch
    betas = tuple(min(max(1.0 - kappa * (1.0 - beta), 0.0), 1.0 - 1e-12) for beta in optim.betas)
    return AdamSettings(lr, betas, optim.eps / math.sqrt(kappa))


def lr_rule_problem(optim: OptimConfig, global_batch: int) -> str | None:
    """One line when the scaling rule does not hold for this global batch, else None: the square-root rule
    beyond kappa < 1 / (1 - beta1) (a rescaled beta would leave [0, 1)), or linear scaling with a batch other
    than base_batch (Goyal et al.'s rule is SGD's; this optimiser is Adam)."""
    kappa = global_batch / optim.base_batch
    if optim.lr_scaling == "sqrt":
        limit = 1.0 / (1.0 - min(optim.betas))
        if kappa >= limit:
            return (f"lr_scaling sqrt: global batch {global_batch} is {kappa:g} x base_batch {optim.base_batch}, "
                    f"outside the range where Adam's square-root rule (Malladi et al. 2022) holds (kappa < "
                    f"1 / (1 - beta) = {limit:g} for betas {tuple(optim.betas)}): use fewer workers or a smaller "
                    "batch per worker, or raise base_batch to a batch whose lr and betas you have tuned")
    if optim.lr_scaling == "linear" and kappa != 1:
        return (f"lr_scaling linear: Goyal et al. 2017's linear rule is derived for SGD with momentum, not for "
                f"Adam; at {kappa:g} x base_batch use lr_scaling sqrt (Malladi et al. 2022)")
    return None


def describe_lr(optim: OptimConfig, global_batch: int) -> str:
    """One line for the start of a run: the global batch and the Adam settings it gets."""
    rule = {"none": "taken as is", "linear": f"linear in batch / {optim.base_batch}",
            "sqrt": f"square-root rule at batch / {optim.base_batch}"}[optim.lr_scaling]
    warmup = f", {optim.warmup_epochs} warm-up epoch(s)" if optim.warmup_epochs else ""
    settings = adam_settings(optim, global_batch)
    rescaled = (f", betas ({settings.betas[0]:.4g}, {settings.betas[1]:.4g}) eps {settings.eps:.3g}"
                if optim.lr_scaling == "sqrt" and global_batch != optim.base_batch else "")
    return (f"global batch {global_batch}: lr {settings.lr:.3g}{rescaled} "
            f"(lr {optim.lr:g} {rule}{warmup}; then {optim.scheduler}{_plateau_on(optim)})")


def _plateau_on(optim: OptimConfig) -> str:
    return f" on {optim.select_by}" if optim.scheduler == "plateau" else ""


def _main_scheduler(optim: OptimConfig, optimizer: torch.optim.Optimizer):
    if optim.scheduler == "plateau":
        mode = "min" if optim.select_by in LOWER_IS_BETTER else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.1, patience=optim.patience)
    if optim.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, optim.epochs - optim.warmup_epochs))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


class EpochSchedule:
    """Warm-up, then the main scheduler; `step(metric)` once after every epoch (the metric, the validation
    metric named by `OptimConfig.select_by`, is used by plateau only). The target learning rate is the
    optimiser's lr when this is built; `state_dict` / `load_state_dict` resume it exactly."""

    def __init__(self, optim: OptimConfig, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.plateau = optim.scheduler == "plateau"
        self.missing = math.inf if optim.select_by in LOWER_IS_BETTER else 0.0  # no value: counts as no progress
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
            self.main.step(self.missing if metric is None else metric)
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
