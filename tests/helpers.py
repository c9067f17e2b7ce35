"""Small helpers shared by tests."""
from __future__ import annotations

import os
import re
from collections.abc import Iterable

from thorax_ray import storage


def upload_tree(local_dir: str | os.PathLike, uri: str) -> None:
    """Copies a local folder to an s3:// prefix (as a user would with `aws s3 sync`)."""
    fs, base = storage.filesystem(uri)
    for folder, _, files in os.walk(local_dir):
        for name in files:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, local_dir).replace(os.sep, "/")
            fs.put_file(path, f"{base}/{relative}")


def write_text(path: str | os.PathLike, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    return str(path)


def env_without_session_ray(**extra: str) -> dict[str, str]:
    """This process's environment without the test session's `RAY_*` variables, plus `extra`: a job run with it
    starts its own private Ray sized from the machine's cores, as a user's does, unless `extra` names another
    cluster (RAY_ADDRESS, its token)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, **extra}


def lines_not_ours(output: str, ours: Iterable[re.Pattern]) -> list[str]:
    """The non-blank lines of `output` of none of the kinds `ours` that a job prints (Ray's lines, for one)."""
    ours = tuple(ours)
    return [line for line in output.splitlines() if line.strip() and not any(p.match(line) for p in ours)]


CHECKPOINT_SPLIT_HASH = "split-of-the-test-checkpoints"


def make_checkpoint(folder: str | os.PathLike, name: str = "small_cnn", *, size: int = 64, seed: int = 0,
                    model=None, data_origin: str | None = None, payload: dict | None = None, **kwargs):
    """Saves a scoring-ready checkpoint of `model` (default: a new `name` model with seed `seed` and
    `kwargs`) with the preprocessing contract of `size`, `data_origin` when given and any extra `payload`
    keys; returns the model."""
    import torch

    from thorax_ray.checkpoint import CheckpointPayload, save_checkpoint
    from thorax_ray.data.preprocess import preprocessing_contract
    from thorax_ray.models import create_model

    if model is None:
        torch.manual_seed(seed)
        model = create_model(name, **kwargs).eval()
    os.makedirs(folder, exist_ok=True)
    save_checkpoint(str(folder), CheckpointPayload(
        model_name=name, model_build_config=model.build_config, model_state=model.state_dict(),
        preprocessing=preprocessing_contract(size).to_dict(), epoch=0, split_hash=CHECKPOINT_SPLIT_HASH,
        data_origin=data_origin, **(payload or {})))
    return model


def write_scores_commit(out: str, record: dict) -> None:
    """A scoring run's commit record, written as a run writes it (for tests that fabricate committed runs)."""
    from thorax_ray import storage
    from thorax_ray.data.staged import write_record
    from thorax_ray.scoring.output import commit_name

    write_record(storage.join(out, commit_name(record["run_id"])), record)


def shifting_calibration() -> dict:
    """A calibration that moves every finding (fitted on made-up validation rows with shifted logits)."""
    import numpy as np

    from thorax_ray.calibration import fit_calibration
    from thorax_ray.labels import NUM_FINDINGS

    rng = np.random.default_rng(0)
    z = rng.normal(-1.0, 1.5, size=(2000, NUM_FINDINGS))
    labels = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(int)
    return fit_calibration(labels, 1 / (1 + np.exp(-(2 * z + 1))))
