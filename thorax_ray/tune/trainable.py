"""The Tune trial: a function trainable that turns its sampled config into a `TrainConfig` and runs
the same Ray Train job as `jobs/train.py` (`thorax_ray.train.train.fit`), with Tune's
`TuneReportCallback` forwarding each epoch's metrics (`val_mean_auroc`, ...) to Tune/ASHA.

Ray 2.60 (Train V2) no longer tunes a `TorchTrainer` directly; each trial is a small driver that builds
and fits its own trainer. The trial's Train run is `RUNS_ROOT/<trial_id>`: deterministic, so a trial
restarted after an interruption resumes its run from the latest epoch checkpoint.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass

from thorax_ray import storage
from thorax_ray.cluster import ClusterCapacity
from thorax_ray.train.config import TrainConfig
from thorax_ray.train.train import fit
from thorax_ray.tune.space import resolve

EXECUTIONS_DIR = "tune_executions"  # one small JSON record per start of a trial (resume evidence)


@dataclass(frozen=True)
class TrialSetup:
    """What every trial shares (pickled with the trainable)."""

    base: dict  # nested TrainConfig overrides (space base + command-line flags)
    runs_root: str  # local folder or s3:// URI; trial runs land in RUNS_ROOT/<trial_id>
    capacity: ClusterCapacity | None = None  # what the cluster had and could launch when the sweep started

    @property
    def endpoint_url(self) -> str | None:
        """The S3 endpoint the base config names (None: the environment's or AWS's)."""
        return (self.base.get("data") or {}).get("s3_endpoint")


def trial_config(setup: TrialSetup, sample: dict, trial_id: str) -> TrainConfig:
    config = resolve(setup.base, sample)
    config.setdefault("run", {})
    config["run"] = {**config["run"], "name": trial_id, "storage": setup.runs_root}
    return TrainConfig.from_dict(config)


def make_trainable(setup: TrialSetup):
    """The function trainable for `ray.tune.Tuner`."""

    def thorax_trial(sample: dict) -> None:
        import ray.tune  # deferred: Ray (absent on the GPU machine)
        from ray.tune.integration.ray_train import TuneReportCallback  # deferred: Ray (absent on the GPU machine)

        trial_id = ray.tune.get_context().get_trial_id()
        config = trial_config(setup, sample, trial_id)
        record = _record_execution(config, trial_id, sample)
        result = fit(config, callbacks=[TuneReportCallback()], capacity=setup.capacity, progress=False,
                     wait_for_placement=False)
        _finish_execution(record, result.metrics)
        if result.error is not None:
            raise RuntimeError(f"trial {trial_id}: training failed: {result.error}")

    return thorax_trial


def _record_execution(config: TrainConfig, trial_id: str, sample: dict) -> dict:
    run_dir = storage.join(config.run.storage, config.run_name)
    record = {"trial_id": trial_id, "sample": sample, "host": socket.gethostname(), "pid": os.getpid(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "started_unix": time.time(), "finished": None,
              "path": storage.join(run_dir, EXECUTIONS_DIR, f"{time.time_ns()}-{os.getpid()}.json"),
              "endpoint": config.data.s3_endpoint}
    _write_json(record["path"], record)
    return record


def _finish_execution(record: dict, metrics: dict | None) -> None:
    record = {**record, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "seconds": time.time() - record["started_unix"],
              "epochs_run": (metrics or {}).get("epochs_run")}
    _write_json(record["path"], record)


def _write_json(uri: str, payload: dict) -> None:
    fs, path = storage.filesystem(uri, endpoint_url=payload.get("endpoint"))
    fs.makedirs(os.path.dirname(path) if not storage.is_remote(uri) else path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, json.dumps(payload, indent=2, default=str).encode())


def trial_executions(run_dir: str, *, endpoint_url: str | None = None) -> list[dict]:
    """The execution records of a trial's run, oldest first (one per start of the trial)."""
    fs, path = storage.filesystem(storage.join(run_dir, EXECUTIONS_DIR), endpoint_url=endpoint_url)
    if not fs.exists(path):
        return []
    records = []
    for name in sorted(fs.ls(path, detail=False)):
        if str(name).endswith(".json"):
            with fs.open(name, "rb") as handle:
                records.append(json.loads(handle.read()))
    return sorted(records, key=lambda r: r["started_unix"])
