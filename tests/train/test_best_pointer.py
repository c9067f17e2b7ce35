"""metrics.json names only checkpoints that have arrived in storage (issue 24 item 6): while the best epoch's
checkpoint uploads asynchronously, the previous best; the driver completes the pointer when the run ends."""
import json
import os
from types import SimpleNamespace

import pytest

from thorax_ray.checkpoint import INFO_FILE, MODEL_FILE, checkpoint_uploaded
from thorax_ray.train.config import TrainConfig
from thorax_ray.train.loop import run_summary, uploaded_best
from thorax_ray.train.train import checkpoint_retention, finish_best_pointer


def write_checkpoint(run_dir, name, model_bytes: int, *, info=True):
    folder = os.path.join(run_dir, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, MODEL_FILE), "wb") as handle:
        handle.write(b"x" * model_bytes)
    if info:
        open(os.path.join(folder, INFO_FILE), "w").write("{}")


def test_a_checkpoint_is_uploaded_when_both_files_are_whole(tmp_path):
    write_checkpoint(tmp_path, "epoch_0001", 100)
    write_checkpoint(tmp_path, "epoch_0002", 40)  # a copy still running: fewer bytes than rank 0 wrote
    write_checkpoint(tmp_path, "epoch_0003", 100, info=False)
    assert checkpoint_uploaded(str(tmp_path / "epoch_0001"), 100)
    assert checkpoint_uploaded(str(tmp_path / "epoch_0001"))  # size unknown (after a restart): present
    assert not checkpoint_uploaded(str(tmp_path / "epoch_0002"), 100)
    assert not checkpoint_uploaded(str(tmp_path / "epoch_0003"), 100)
    assert not checkpoint_uploaded(str(tmp_path / "epoch_0004"), 100)


def test_metrics_name_the_previous_best_while_the_best_uploads_and_the_driver_completes_it(tmp_path):
    run_dir = str(tmp_path)
    config = TrainConfig.from_dict({"model": {"name": "small_cnn"}})
    bests = [{"epoch": e, "checkpoint": f"epoch_000{e}", "val": {"mean_auroc": 0.5 + e / 10}} for e in (1, 3)]
    worker = SimpleNamespace(bests=bests, info={"run_dir": run_dir}, config=config,
                             model_bytes={"epoch_0001": 100, "epoch_0003": 100})
    write_checkpoint(run_dir, "epoch_0001", 100)
    write_checkpoint(run_dir, "epoch_0003", 30)  # epoch 3's upload is running
    info = {"run_name": "r", "split_hash": "h"}
    summary = run_summary(config, info, [], bests[-1], [], uploaded=uploaded_best(worker), model_bytes=worker.model_bytes)
    assert summary["best_epoch"] == 3 and summary["val"] == bests[-1]["val"]
    assert summary["best_checkpoint"] == "epoch_0001" and summary["best_checkpoint_pending"] == "epoch_0003"
    assert summary["best_checkpoint_pending_bytes"] == 100
    open(os.path.join(run_dir, "metrics.json"), "w").write(json.dumps(summary))
    assert finish_best_pointer(run_dir, None)["best_checkpoint"] == "epoch_0001"  # not arrived: not named
    write_checkpoint(run_dir, "epoch_0003", 100)
    finished = finish_best_pointer(run_dir, None)
    assert finished["best_checkpoint"] == "epoch_0003" and finished["best_checkpoint_pending"] is None
    assert json.load(open(os.path.join(run_dir, "metrics.json")))["best_checkpoint"] == "epoch_0003"
    nothing = SimpleNamespace(bests=bests[:1], info={"run_dir": str(tmp_path / "empty")}, config=config,
                              model_bytes={})
    assert run_summary(config, info, [], bests[0], [], uploaded=uploaded_best(nothing))["best_checkpoint"] is None


@pytest.mark.parametrize("select_by, order", [("val_mean_auroc", "max"), ("val_loss", "min")])
def test_retention_keeps_the_best_by_the_selection_metric(select_by, order):
    kept = checkpoint_retention(TrainConfig.from_dict({"optim": {"select_by": select_by}}))
    assert (kept.num_to_keep, kept.checkpoint_score_attribute, kept.checkpoint_score_order) == (3, select_by, order)
    assert checkpoint_retention(TrainConfig.from_dict({"run": {"keep_checkpoints": None}})).num_to_keep is None
    with pytest.raises(ValueError, match="keep_checkpoints must be >= 2"):
        TrainConfig.from_dict({"run": {"keep_checkpoints": 1}})
