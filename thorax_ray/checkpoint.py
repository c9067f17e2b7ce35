"""Checkpoints that load anywhere: the unwrapped state dict plus everything needed to rebuild, resume
and audit a model (architecture, optimiser, scheduler, epoch, config, label order, preprocessing
contract, split hash, seed, versions). Loaded with `torch.load(..., weights_only=True)` and strict
state-dict loading; a missing checkpoint is an error, never a random model."""
from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import platform
import re

import numpy
import torch

from thorax_ray import __version__, storage
from thorax_ray.labels import FINDINGS

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
INFO_FILE = "checkpoint.json"
RUN_METRICS_FILE = "metrics.json"
CHECKPOINT_FORMAT_VERSION = 1
_EPOCH_DIR = re.compile(r"^epoch_(\d+)$")


class CheckpointError(FileNotFoundError):
    pass


def package_versions() -> dict[str, str]:
    """Versions of what made the checkpoint; Ray's from its installed metadata ("not installed" where a
    checkpoint is saved without Ray, e.g. by bench/gpu.py on the GPU machine)."""
    import torchvision  # deferred: torchvision (slow import)


    versions = {"thorax_ray": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
                "ray": _installed_version("ray"), "numpy": numpy.__version__, "python": platform.python_version()}
    return {name: str(version) for name, version in versions.items()}  # plain str: weights_only loading


def _installed_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def checkpoint_dir_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}"


def save_checkpoint(directory: str, payload: dict) -> None:
    """Writes model.pt (tensors and plain types only) and a readable checkpoint.json beside it."""
    payload = {"format": CHECKPOINT_FORMAT_VERSION, "labels": list(FINDINGS), "versions": package_versions(), **payload}
    torch.save(payload, f"{directory}/{MODEL_FILE}")
    readable = {k: v for k, v in payload.items() if not k.endswith("_state")}
    with open(f"{directory}/{INFO_FILE}", "w") as handle:
        json.dump(readable, handle, indent=2, default=str)


def load_payload(checkpoint_dir: str, *, endpoint_url: str | None = None) -> dict:
    return load_payload_and_id(checkpoint_dir, endpoint_url=endpoint_url)[0]


def load_payload_and_id(checkpoint_dir: str, *, endpoint_url: str | None = None) -> tuple[dict, str]:
    """(payload, model_id) from one read of model.pt; `model_id` as in `checkpoint_model_id`, so the id
    always names the bytes the payload came from."""
    fs, path = storage.filesystem(checkpoint_dir, endpoint_url=endpoint_url)
    model_path = f"{path}/{MODEL_FILE}"
    if not fs.exists(model_path):
        raise CheckpointError(f"{checkpoint_dir}: no {MODEL_FILE}; not a thorax-ray checkpoint")
    with fs.open(model_path, "rb") as handle:
        data = handle.read()
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if list(payload.get("labels", [])) != list(FINDINGS):
        raise CheckpointError(f"{checkpoint_dir}: label order {payload.get('labels')} differs from {list(FINDINGS)}")
    return payload, _model_id(hashlib.sha256(data))


def checkpoint_model_id(checkpoint_dir: str, *, endpoint_url: str | None = None) -> str:
    """`model_id`: the first 16 hex digits of the SHA-256 of the checkpoint's model.pt bytes (streamed;
    use `load_payload_and_id` when the payload is needed too)."""
    fs, path = storage.filesystem(checkpoint_dir, endpoint_url=endpoint_url)
    digest = hashlib.sha256()
    with fs.open(f"{path}/{MODEL_FILE}", "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return _model_id(digest)


def _model_id(digest) -> str:
    return digest.hexdigest()[:16]


def run_metrics(run_dir: str, *, endpoint_url: str | None = None) -> dict | None:
    return storage.read_json(storage.join(run_dir, RUN_METRICS_FILE), endpoint_url=endpoint_url)


def write_run_metrics(run_dir: str, metrics: dict, *, endpoint_url: str | None = None) -> None:
    """Writes metrics.json in one step, so a reader (`resolve_checkpoint`) never sees a partial file."""
    storage.write_json(storage.join(run_dir, RUN_METRICS_FILE), metrics, endpoint_url=endpoint_url)


def epoch_checkpoints(run_dir: str, *, endpoint_url: str | None = None) -> list[tuple[int, str]]:
    """(epoch, URI) of the run's epoch checkpoint folders, oldest first."""
    fs, path = storage.filesystem(run_dir, endpoint_url=endpoint_url)
    if not fs.exists(path):
        return []
    found = []
    for entry in fs.ls(path, detail=False):
        match = _EPOCH_DIR.match(entry.rstrip("/").rsplit("/", 1)[-1])
        if match and fs.exists(f"{entry}/{MODEL_FILE}"):
            found.append((int(match.group(1)), storage.to_uri(fs, entry)))
    return sorted(found)


def resolve_checkpoint(uri: str, *, endpoint_url: str | None = None) -> str:
    """A checkpoint folder, or a run folder `STORAGE/NAME` meaning its best checkpoint."""
    fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
    if fs.exists(f"{path}/{MODEL_FILE}"):
        return uri
    metrics = run_metrics(uri, endpoint_url=endpoint_url)
    if metrics and metrics.get("best_checkpoint"):
        return storage.join(uri, metrics["best_checkpoint"])
    if not fs.exists(path):
        raise CheckpointError(f"{uri}: checkpoint not found")
    raise CheckpointError(f"{uri}: neither a checkpoint folder ({MODEL_FILE}) nor a run folder with a best checkpoint "
                          f"in {RUN_METRICS_FILE}")


def latest_loadable(run_dir: str, *, endpoint_url: str | None = None) -> dict | None:
    """The newest epoch checkpoint of a run that loads completely (a torn upload is skipped)."""
    for epoch, uri in reversed(epoch_checkpoints(run_dir, endpoint_url=endpoint_url)):
        try:
            return load_payload(uri, endpoint_url=endpoint_url)
        except Exception as error:  # noqa: BLE001 - a partial upload can fail in many ways
            log.warning("skipping unreadable checkpoint %s: %s", uri, error)
    return None
