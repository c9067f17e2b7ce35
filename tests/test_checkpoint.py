import hashlib
import json

import pytest
import torch

from thorax_ray.checkpoint import (CheckpointError, CheckpointPayload, checkpoint_model_id, epoch_checkpoints,
                                   latest_loadable, load_payload, load_payload_and_id, resolve_checkpoint,
                                   run_metrics, save_checkpoint, write_run_metrics)
from thorax_ray.models import build_model, create_model


def payload(model, epoch=0):
    return CheckpointPayload(
        model_name="small_cnn", model_build_config=model.build_config, model_state=model.state_dict(),
        optimizer_state=torch.optim.Adam(model.parameters()).state_dict(), scheduler_state={}, epoch=epoch,
        config={"x": 1}, preprocessing={"size": 32}, split_hash="abc", seed=0, history=[], best=None)


def test_save_load_weights_only_and_strict(tmp_path):
    model = create_model("small_cnn")
    save_checkpoint(str(tmp_path), payload(model))
    loaded = torch.load(tmp_path / "model.pt", weights_only=True)  # plain types and tensors only
    assert loaded["split_hash"] == "abc" and loaded["labels"][0] == "Atelectasis" and "torch" in loaded["versions"]
    rebuilt = build_model(load_payload(str(tmp_path)))
    x = torch.randn(2, 1, 32, 32)
    model.eval()
    assert torch.allclose(rebuilt(x), model(x))
    assert json.loads((tmp_path / "checkpoint.json").read_text())["epoch"] == 0
    broken = load_payload(str(tmp_path))
    broken.model_state.pop(next(iter(broken.model_state)))
    with pytest.raises(RuntimeError, match="Missing key"):
        build_model(broken)


def test_missing_checkpoint_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint(str(tmp_path / "nope"))
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match="neither a checkpoint folder"):
        resolve_checkpoint(str(tmp_path / "run"))
    with pytest.raises(CheckpointError, match="no model.pt"):
        load_payload(str(tmp_path / "run"))


def test_run_dir_resolves_to_best_and_latest_skips_torn_upload(tmp_path):
    model = create_model("small_cnn")
    for epoch in range(3):
        (tmp_path / f"epoch_{epoch:04d}").mkdir()
        save_checkpoint(str(tmp_path / f"epoch_{epoch:04d}"), payload(model, epoch))
    write_run_metrics(str(tmp_path), {"best_checkpoint": "epoch_0001"})
    assert resolve_checkpoint(str(tmp_path)).endswith("epoch_0001")
    assert [e for e, _ in epoch_checkpoints(str(tmp_path))] == [0, 1, 2]
    (tmp_path / "epoch_0002" / "model.pt").write_bytes(b"torn")
    assert latest_loadable(str(tmp_path)).epoch == 1


def test_payload_and_model_id_from_one_read(tmp_path):
    model = create_model("small_cnn")
    save_checkpoint(str(tmp_path), payload(model, epoch=3))
    loaded, model_id = load_payload_and_id(str(tmp_path))
    assert model_id == hashlib.sha256((tmp_path / "model.pt").read_bytes()).hexdigest()[:16]
    assert model_id == checkpoint_model_id(str(tmp_path)) and loaded.epoch == 3
    assert all(torch.equal(v, load_payload(str(tmp_path)).model_state[k]) for k, v in loaded.model_state.items())
    save_checkpoint(str(tmp_path), payload(model, epoch=4))  # other bytes, other id
    assert load_payload_and_id(str(tmp_path))[1] != model_id


def test_run_metrics_written_whole_and_missing_is_none(tmp_path):
    assert run_metrics(str(tmp_path / "run")) is None
    write_run_metrics(str(tmp_path / "run"), {"best_checkpoint": "epoch_0001", "history": [1, 2]})
    write_run_metrics(str(tmp_path / "run"), {"best_checkpoint": "epoch_0002"})
    assert run_metrics(str(tmp_path / "run")) == {"best_checkpoint": "epoch_0002"}
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["metrics.json"]  # no temporary file left


def test_a_checkpoint_with_an_unknown_or_missing_field_is_refused_in_one_line(tmp_path):
    model = create_model("small_cnn")
    save_checkpoint(str(tmp_path), payload(model))
    stored = torch.load(tmp_path / "model.pt", weights_only=True)
    torch.save({**stored, "colour": "rgb"}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"unknown checkpoint field\(s\) \['colour'\]"):
        load_payload(str(tmp_path))
    torch.save({k: v for k, v in stored.items() if k != "model_state"}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="not a complete thorax-ray checkpoint.*model_state"):
        load_payload(str(tmp_path))
