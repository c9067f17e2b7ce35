"""Real Ray Train runs on the local cluster (about a minute each on 2 cores): learning, fault tolerance,
resume, evaluation of the resulting checkpoints."""
import json
import os
import signal
import threading
import time

import psutil
import pytest
import torch

from thorax_ray.checkpoint import epoch_checkpoints, load_payload, run_metrics
from thorax_ray.data.sources import DataConfig, open_source
from thorax_ray.evaluation.checkpoint import evaluate_checkpoint
from thorax_ray.train.config import TrainConfig
from thorax_ray.train.train import fit

pytestmark = pytest.mark.slow


def small_config(dataset, storage, name, **sections):
    base = {"data": {"data": str(dataset), "size": 64, "batch_size": 32},
            "model": {"name": "small_cnn"}, "optim": {"epochs": 4, "lr": 3e-3},
            "run": {"storage": str(storage), "name": name, "workers": 2}}
    for section, values in sections.items():
        base[section] = {**base.get(section, {}), **values}
    return TrainConfig.from_dict(base)


def test_mlp_learns_from_metadata_alone(ray_local, metadata_only, tmp_path):
    config = small_config(metadata_only, tmp_path, "mlp", optim={"epochs": 6, "lr": 3e-3},
                          model={"name": "mlp", "metadata_features": ["age", "sex", "view_position", "follow_up"]},
                          data={"batch_size": 128})
    result = fit(config)
    assert result.metrics["model"] == "mlp" and result.metrics["epochs_run"] == 6
    assert result.metrics["val"]["mean_auroc"] > 0.58  # chance is 0.5
    evaluation = evaluate_checkpoint(result.run_dir, str(metadata_only), "test")
    assert evaluation["n_images"] == sum(1 for _ in open(metadata_only / "test_list.txt"))
    assert evaluation["mean_auroc"] > 0.56


def test_small_cnn_learns_findings_far_above_the_mlp(ray_local, learnable_images, tmp_path):
    prepared = learnable_images / "prepared"
    cnn = fit(small_config(prepared, tmp_path, "cnn", optim={"epochs": 10}))
    mlp = fit(small_config(prepared, tmp_path, "mlp", model={"name": "mlp"}, optim={"epochs": 5}))
    cnn_auroc, mlp_auroc = cnn.metrics["val"]["mean_auroc"], mlp.metrics["val"]["mean_auroc"]
    # 272 validation images: the best epoch's mean AUROC varies by a few hundredths between runs (two workers
    # split the shuffled rows by timing); 0.68-0.74 seen, chance is 0.5 and the MLP ~0.55
    assert cnn_auroc > 0.65 and cnn_auroc > mlp_auroc + 0.1, (cnn_auroc, mlp_auroc)
    metrics = json.loads(open(os.path.join(cnn.run_dir, "metrics.json")).read())
    assert {"model", "split_hash", "best_epoch", "val", "history"} <= set(metrics)
    assert len(metrics["history"]) == 10 and set(metrics["val"]["auroc"]) >= {"Cardiomegaly", "Hernia"}
    checkpoints = epoch_checkpoints(cnn.run_dir)
    # epochs numbered from 1, as printed; kept: the 3 best by validation mean AUROC and the latest (run.keep_checkpoints)
    ranked = sorted(metrics["history"], key=lambda h: h["val"]["mean_auroc"], reverse=True)
    assert {e for e, _ in checkpoints} == {h["epoch"] for h in ranked[:3]} | {10}
    assert metrics["best_checkpoint"] == f"epoch_{metrics['best_epoch']:04d}" and not metrics["best_checkpoint_pending"]
    payload = load_payload(checkpoints[-1][1])  # torch.load(weights_only=True) inside
    assert payload.split_hash == metrics["split_hash"] and payload.preprocessing["size"] == 64
    assert all(getattr(payload, key) is not None for key in (  # every field a resume or an audit needs, filled
        "model_state", "optimizer_state", "scheduler_state", "epoch", "config", "labels", "seed", "versions",
        "operating_points"))
    assert payload.data_origin == "synthetic"  # prepared from thorax_ray.synthetic's data (its record)
    # operating points chosen on the validation predictions of each epoch travel with its checkpoint, and the
    # best epoch's in metrics.json; how the model started is recorded in both
    points = payload.operating_points
    assert points["rule"] == "youden" and points["chosen_on"] == "validation"
    # two workers, the validation rows split between them (train.ingest_config): every one gathered exactly once
    assert points["n_images"] == len(open_source(DataConfig(data=str(prepared))).rows("val"))
    defined = [v for v in points["thresholds"].values() if v is not None]
    assert len(defined) >= 8 and all(0.0 < v < 1.0 for v in defined)
    best = load_payload(os.path.join(cnn.run_dir, metrics["best_checkpoint"]))
    assert metrics["val"]["operating_points"] == best.operating_points
    assert metrics["init"]["label"] == "random init" and payload.model_build_config["init"]["kind"] == "random"
    evaluation = evaluate_checkpoint(cnn.run_dir, str(prepared), "test")
    assert evaluation["mean_auroc"] > 0.65 and evaluation["model"] == "small_cnn"


def train_workers() -> list[psutil.Process]:
    """Train workers of this test session's Ray (started by this process), never another program's."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if any("RayTrainWorker" in part for part in process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_worker_killed_mid_run_resumes_from_latest_checkpoint(ray_local, learnable_images, tmp_path, monkeypatch):
    config = small_config(learnable_images / "prepared", tmp_path, "faulty", optim={"epochs": 6},
                          run={"max_failures": 2})
    killed = {}

    def kill_after_second_checkpoint():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed:
            if len(epoch_checkpoints(os.path.join(tmp_path, "faulty"))) >= 2:
                workers = train_workers()
                if len(workers) == 2:
                    workers[-1].send_signal(signal.SIGKILL)
                    killed["pid"] = workers[-1].pid
                    killed["after"] = len(epoch_checkpoints(os.path.join(tmp_path, "faulty")))
            time.sleep(0.2)

    watcher = threading.Thread(target=kill_after_second_checkpoint, daemon=True)
    watcher.start()
    result = fit(config)
    watcher.join(timeout=5)
    assert killed, "the watcher never saw two workers and two checkpoints"
    metrics = result.metrics
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, 7))  # every epoch once, none repeated
    assert metrics["resumes"], "the run did not restart"
    # resumed from a checkpoint durable at the kill (the newest may still be uploading), not from scratch
    assert metrics["resumes"][0]["after_epoch"] >= killed["after"] - 1 >= 1


def test_same_run_name_continues_from_its_last_epoch(ray_local, metadata_only, tmp_path):
    def config(epochs: int) -> TrainConfig:  # the metadata MLP: the resume path is the CNN's, its epochs take 0.2 s
        return small_config(metadata_only, tmp_path, "again", model={"name": "mlp"}, optim={"epochs": epochs},
                            data={"batch_size": 256})

    first = fit(config(2))
    assert first.metrics["epochs_run"] == 2
    second = fit(config(3))
    assert [h["epoch"] for h in second.metrics["history"]] == [1, 2, 3]
    assert [r["after_epoch"] for r in second.metrics["resumes"]] == [2]
    before = load_payload(epoch_checkpoints(first.run_dir)[1][1]).model_state
    assert any(not torch.equal(before[k], v) for k, v in load_payload(epoch_checkpoints(second.run_dir)[2][1]).model_state.items())
    def without_wall(history):  # an epoch's wall time is known only after its checkpoint was saved
        return [{k: v for k, v in h.items() if k != "wall_seconds"} for h in history]

    assert without_wall(run_metrics(second.run_dir)["history"][:2]) == without_wall(first.metrics["history"])


def test_checkpoints_and_metrics_on_s3(ray_local, metadata_only, s3_bucket):
    storage = f"{s3_bucket}/runs"
    result = fit(small_config(metadata_only, storage, "mlp-s3", model={"name": "mlp"}, optim={"epochs": 2},
                              data={"batch_size": 256}))
    assert result.run_dir == f"{storage}/mlp-s3"
    assert [epoch for epoch, _ in epoch_checkpoints(result.run_dir)] == [1, 2]
    metrics = run_metrics(result.run_dir)
    assert metrics["epochs_run"] == 2 and metrics["model"] == "mlp"
    assert metrics["best_checkpoint"] and not metrics["best_checkpoint_pending"]  # named once in S3, at the latest by the end
    evaluation = evaluate_checkpoint(result.run_dir, str(metadata_only), "val")
    assert evaluation["checkpoint"].startswith(f"{storage}/mlp-s3/epoch_000")
    assert evaluation["n_images"] > 0 and evaluation["mean_auroc"] is not None
