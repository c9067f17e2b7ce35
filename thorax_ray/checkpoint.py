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
from dataclasses import dataclass, field, fields, replace

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


@dataclass(frozen=True, kw_only=True)
class CheckpointPayload:
    """What a checkpoint's model.pt holds, field by field. Stored as a plain dict of tensors and plain types
    (`to_dict`), so that `torch.load(..., weights_only=True)` reads it; a section that a later stage owns
    stays the plain dict that stage writes and reads: `model_build_config` (models.registry),
    `preprocessing` (data.preprocess.PreprocessingContract.to_dict()), `config` (TrainConfig.to_dict()),
    `operating_points` (thorax_ray.thresholds), `calibration` (thorax_ray.calibration.fit_calibration),
    `validation_reference` (thorax_ray.monitoring.reference.validation_reference). Fields a
    checkpoint was written without are None."""

    format: int = CHECKPOINT_FORMAT_VERSION
    labels: list[str] = field(default_factory=lambda: list(FINDINGS))  # the order of the model's outputs
    versions: dict[str, str] | None = None  # package_versions() when saved
    model_name: str
    model_build_config: dict
    model_state: dict
    optimizer_state: dict | None = None
    scheduler_state: dict | None = None
    epoch: int | None = None
    epochs_from: int | None = None  # 1; None: written before epochs were numbered from 1 (they count from 0)
    config: dict | None = None
    preprocessing: dict | None = None
    split_hash: str | None = None  # the split the model was trained on
    seed: int | None = None
    history: list[dict] = field(default_factory=list)  # per-epoch records up to `epoch`
    best: dict | None = None  # the best epoch's record so far
    resumes: list[dict] = field(default_factory=list)
    run_name: str | None = None
    data_origin: str | None = None  # synthetic | real (thorax_ray.data.origin)
    operating_points: dict | None = None  # per-finding thresholds chosen on validation at `epoch`
    calibration: dict | None = None  # per-finding calibration fitted on validation at `epoch`
    validation_reference: dict | None = None  # validation distributions at `epoch` (thorax_ray.monitoring.reference)

    def to_dict(self) -> dict:
        """The stored form (shallow: the state dicts' tensors are not copied), fields in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, stored: dict, *, where: str) -> "CheckpointPayload":
        unknown = sorted(set(stored) - {f.name for f in fields(cls)})
        if unknown:
            raise CheckpointError(f"{where}: unknown checkpoint field(s) {unknown}; written by a newer thorax-ray?")
        try:
            return cls(**stored)
        except TypeError as error:  # a required field missing
            raise CheckpointError(f"{where}: not a complete thorax-ray checkpoint ({error})") from None


def save_checkpoint(directory: str, payload: CheckpointPayload) -> None:
    """Writes model.pt (tensors and plain types only) and a readable checkpoint.json beside it."""
    stored = replace(payload, format=CHECKPOINT_FORMAT_VERSION, labels=list(FINDINGS),
                     versions=package_versions()).to_dict()
    torch.save(stored, f"{directory}/{MODEL_FILE}")
    readable = {k: v for k, v in stored.items() if not k.endswith("_state")}
    with open(f"{directory}/{INFO_FILE}", "w") as handle:
        json.dump(readable, handle, indent=2, default=_readable_value)


def _readable_value(value) -> str:
    """checkpoint.json's form of what JSON lacks: a tensor by its shape and type (not its values), else str()."""
    if isinstance(value, torch.Tensor):
        return f"<tensor {list(value.shape)} {str(value.dtype).removeprefix('torch.')}>"
    return str(value)


def checkpoint_uploaded(checkpoint_dir: str, model_bytes: int | None = None, *,
                        endpoint_url: str | None = None) -> bool:
    """Whether a checkpoint folder is complete in storage: its checkpoint.json is there and its model.pt has
    `model_bytes` bytes (the size written locally; None: present). An upload still running (or torn by a
    crash) fails this, so nothing names a checkpoint before it has arrived."""
    fs, path = storage.filesystem(checkpoint_dir, endpoint_url=endpoint_url)
    try:
        return fs.exists(f"{path}/{INFO_FILE}") and (
            fs.exists(f"{path}/{MODEL_FILE}") if model_bytes is None else fs.size(f"{path}/{MODEL_FILE}") == model_bytes)
    except FileNotFoundError:
        return False


def load_payload(checkpoint_dir: str, *, endpoint_url: str | None = None) -> CheckpointPayload:
    return load_payload_and_id(checkpoint_dir, endpoint_url=endpoint_url)[0]


def load_payload_and_id(checkpoint_dir: str, *, endpoint_url: str | None = None) -> tuple[CheckpointPayload, str]:
    """(payload, model_id) from one read of model.pt; `model_id` as in `checkpoint_model_id`, so the id
    always names the bytes the payload came from."""
    fs, path = storage.filesystem(checkpoint_dir, endpoint_url=endpoint_url)
    model_path = f"{path}/{MODEL_FILE}"
    if not fs.exists(model_path):
        raise CheckpointError(f"{checkpoint_dir}: no {MODEL_FILE}; not a thorax-ray checkpoint")
    with fs.open(model_path, "rb") as handle:
        data = handle.read()
    stored = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if list(stored.get("labels", [])) != list(FINDINGS):
        raise CheckpointError(f"{checkpoint_dir}: label order {stored.get('labels')} differs from {list(FINDINGS)}")
    return CheckpointPayload.from_dict(stored, where=checkpoint_dir), _model_id(hashlib.sha256(data))


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


def latest_loadable(run_dir: str, *, endpoint_url: str | None = None) -> CheckpointPayload | None:
    """The newest epoch checkpoint of a run that loads completely (a torn upload is skipped)."""
    for epoch, uri in reversed(epoch_checkpoints(run_dir, endpoint_url=endpoint_url)):
        try:
            return load_payload(uri, endpoint_url=endpoint_url)
        except Exception as error:  # noqa: BLE001 - a partial upload can fail in many ways
            log.warning("skipping unreadable checkpoint %s: %s", uri, error)
    return None
