"""What a sweep leaves behind: `results.csv` (one row per trial) and `best_config.yaml` (the best trial's
full TrainConfig, which `jobs/train.py --config` accepts unchanged)."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import pandas as pd
import yaml

from thorax_ray import storage
from thorax_ray.checkpoint import run_metrics
from thorax_ray.labels import FINDINGS
from thorax_ray.train.config import TrainConfig
from thorax_ray.tune.space import resolve
from thorax_ray.tune.trainable import TrialSetup, trial_executions

FINISHED = ("TERMINATED", "ERROR")


@dataclass
class TrialRow:
    trial: str
    status: str
    sample: dict  # the searched values
    run_dir: str
    best_val_mean_auroc: float | None
    best_epoch: int | None
    per_class_auroc: dict
    metric_value: float | None  # the tune metric at its best epoch
    epochs_run: int
    max_epochs: int
    stopped_early: bool
    wall_time_s: float | None
    executions: int
    error: str | None

    def as_record(self) -> dict:
        return {"trial": self.trial, "status": self.status, "config": json.dumps(self.sample, sort_keys=True),
                "best_val_mean_auroc": self.best_val_mean_auroc, "best_epoch": self.best_epoch,
                "epochs_run": self.epochs_run, "max_epochs": self.max_epochs, "stopped_early": self.stopped_early,
                "wall_time_s": None if self.wall_time_s is None else round(self.wall_time_s, 1),
                "executions": self.executions, "error": self.error, "run_dir": self.run_dir,
                **{f"auroc_{name}": self.per_class_auroc.get(name) for name in FINDINGS}}


def trial_dirname(trial) -> str:
    """Tune trial folders named by trial id alone (the Train run of the trial is RUNS_ROOT/<trial id>)."""
    return trial.trial_id


def _finite(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def collect(trials, setup: TrialSetup, metric: str, mode: str) -> list[TrialRow]:
    """One row per Tune trial (`ExperimentAnalysis.trials`). Epochs and AUROCs come from what the trial
    reported to Tune (its progress.csv, appended to across restarts), which is complete even when Tune
    stops a trial before its Train run writes metrics.json; metrics.json fills in otherwise."""
    rows = []
    endpoint = setup.endpoint_url
    for trial in trials:
        config = TrainConfig.from_dict(resolve(setup.base, trial.config))
        run_dir = storage.join(setup.runs_root, trial.trial_id)
        history = reported_history(trial) or _history_from_run(run_dir, endpoint)
        best = _best_epoch(history, metric, mode)
        last = trial.last_result or {}
        epochs_run = len({h["epoch"] for h in history})
        rows.append(TrialRow(
            trial=trial.trial_id, status=trial.status, sample=dict(trial.config), run_dir=run_dir,
            best_val_mean_auroc=_finite(best.get("val_mean_auroc")) if best else None,
            best_epoch=best["epoch"] if best else None,
            per_class_auroc={name: _finite(best.get(f"val_auroc_{name.lower()}")) for name in FINDINGS} if best else {},
            metric_value=_finite(best.get(metric)) if best else None,
            epochs_run=epochs_run, max_epochs=config.optim.epochs,
            stopped_early=trial.status == "TERMINATED" and 0 < epochs_run < config.optim.epochs,
            wall_time_s=_finite(last.get("time_total_s")),
            executions=len(trial_executions(run_dir, endpoint_url=endpoint)),
            error=_error_text(trial) if trial.status == "ERROR" else None))
    return rank(rows, mode)


def reported_history(trial) -> list[dict]:
    """The per-epoch results the trial reported to Tune (flat: epoch, val_mean_auroc, val_auroc_<x>)."""
    path = os.path.join(trial.local_path or "", "progress.csv") if getattr(trial, "local_path", None) else None
    if not path or not os.path.exists(path):
        return []
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, OSError):
        return []
    if "epoch" not in frame:
        return []
    records = frame.drop_duplicates("epoch", keep="last").to_dict("records")
    return [{k: v for k, v in r.items() if k == "epoch" or k.startswith("val_") or k == "train_loss"} for r in records]


def _history_from_run(run_dir: str, endpoint: str | None) -> list[dict]:
    metrics = run_metrics(run_dir, endpoint_url=endpoint) or {}
    flat = []
    for record in metrics.get("history") or []:
        val = record.get("val") or {}
        flat.append({"epoch": record["epoch"], "train_loss": record.get("train_loss"),
                     "val_mean_auroc": val.get("mean_auroc"),
                     **{f"val_auroc_{k.lower()}": v for k, v in (val.get("auroc") or {}).items()}})
    return flat


def _best_epoch(history: list[dict], metric: str, mode: str) -> dict | None:
    scored = [h for h in history if _finite(h.get(metric)) is not None]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda h: h[metric])


def _error_text(trial) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        with open(path) as handle:
            lines = [line for line in handle.read().strip().splitlines() if line.strip()]
        return lines[-1][:300] if lines else "error"
    except OSError:
        return "error"


def rank(rows: list[TrialRow], mode: str) -> list[TrialRow]:
    """Best first by the tune metric; trials without a value last."""
    sign = -1 if mode == "max" else 1
    return sorted(rows, key=lambda r: (r.metric_value is None, sign * (r.metric_value or 0.0), r.trial))


def write_results(rows: list[TrialRow], out_dir: str, *, endpoint_url: str | None = None) -> str:
    """results.csv in `out_dir` (a local folder or an s3:// prefix), written in one step."""
    path = storage.join(out_dir, "results.csv")
    text = pd.DataFrame([r.as_record() for r in rows]).to_csv(index=False)
    storage.write_text(path, text, endpoint_url=endpoint_url)
    return path


def best_config(rows: list[TrialRow], setup: TrialSetup) -> tuple[TrialRow, TrainConfig] | None:
    """The best finished trial and its TrainConfig with the tuning-specific run name/storage reset."""
    candidates = [r for r in rows if r.metric_value is not None and r.status != "ERROR"]
    if not candidates:
        return None
    best = candidates[0]  # rows are ranked
    return best, TrainConfig.from_dict(resolve(setup.base, best.sample))


def write_best_config(row: TrialRow, config: TrainConfig, out_dir: str, *, experiment: str, metric: str,
                      endpoint_url: str | None = None) -> str:
    """best_config.yaml in `out_dir` (a local folder or an s3:// prefix): a comment header naming the trial,
    then the full TrainConfig, which `jobs/train.py --config` reads from either place."""
    path = storage.join(out_dir, "best_config.yaml")
    header = (f"# Best trial {row.trial} of Tune experiment {experiment!r}: {metric} {row.metric_value:.4f} "
              f"(epoch index {row.best_epoch}, {row.epochs_run} of {row.max_epochs} epochs run).\n"
              f"# Searched values: {json.dumps(row.sample, sort_keys=True)}\n"
              f"# Train it: python jobs/train.py --config {path}\n")
    body = yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False)
    storage.write_text(path, header + body, endpoint_url=endpoint_url)
    return path


def format_table(rows: list[TrialRow], top: int) -> str:
    """The top trials as a fixed-width text table."""
    lines = [f"{'rank':>4}  {'trial':<14} {'status':<10} {'val AUROC':>9} {'epochs':>6} {'early':>5} "
             f"{'wall s':>7}  config"]
    for i, row in enumerate(rows[:top], 1):
        auroc = "n/a" if row.best_val_mean_auroc is None else f"{row.best_val_mean_auroc:.4f}"
        wall = "n/a" if row.wall_time_s is None else f"{row.wall_time_s:.0f}"
        lines.append(f"{i:>4}  {row.trial:<14} {row.status:<10} {auroc:>9} {row.epochs_run:>3}/{row.max_epochs:<2} "
                     f"{'yes' if row.stopped_early else 'no':>5} {wall:>7}  {json.dumps(row.sample, sort_keys=True)}")
    return "\n".join(lines)
