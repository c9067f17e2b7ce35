"""AUROC and calibration error of one checkpoint on one split of a dataset (`jobs/evaluate.py --checkpoint`),
every row once."""
from __future__ import annotations

import logging

import torch

from thorax_ray.calibration import apply_calibration, describe_calibration
from thorax_ray.checkpoint import load_payload, resolve_checkpoint
from thorax_ray.data.preprocess import PreprocessingContract
from thorax_ray.data.sources import DataConfig, open_source
from thorax_ray.evaluation.reliability import calibration_metrics
from thorax_ray.metrics import mean_auroc, per_class_auroc
from thorax_ray.models import build_model
from thorax_ray.models.predict import predict
from thorax_ray.models.tta import NO_TTA, check_tta, describe_tta

log = logging.getLogger(__name__)


def evaluate_checkpoint(checkpoint: str, data: str, split: str = "test", *, batch_size: int = 64,
                        s3_endpoint: str | None = None, tta: str = NO_TTA) -> dict:
    """AUROC of a checkpoint on one split of a dataset (raw, prepared or metadata-only), every row once, and
    "calibration": the expected calibration error per finding of its raw probabilities and of the calibrated
    ones (its own calibration, `CheckpointPayload.calibration`, applied; the raw ones again when it has none),
    laid out as evaluation.reliability.calibration_metrics. `tta`: the probabilities are the mean over the
    views of a test-time augmentation (thorax_ray.models.tta; refused for a metadata-only model), recorded as
    "tta" (tta.describe_tta; the calibration was fitted on un-augmented validation predictions)."""
    checkpoint_dir = resolve_checkpoint(checkpoint, endpoint_url=s3_endpoint)
    payload = load_payload(checkpoint_dir, endpoint_url=s3_endpoint)
    model = build_model(payload)
    check_tta(tta, model.spec)
    contract = PreprocessingContract.from_dict(payload.preprocessing)
    source = open_source(DataConfig(data=data, size=contract.size, s3_endpoint=s3_endpoint))
    if source.split_hash != payload.split_hash:
        log.warning(
            "split hash of %s (%s) differs from the checkpoint's (%s): test rows may overlap its training rows",
            data, source.split_hash, payload.split_hash)
    rows = source.dataset(split, images=model.spec.uses_images)
    predictions = predict(model, rows.iter_batches(batch_size=batch_size, batch_format="pyarrow"),
                          contract=contract, stored_size=source.stored_size, device=torch.device("cpu"), tta=tta)
    aurocs = per_class_auroc(predictions.labels, predictions.probabilities)
    calibrated = apply_calibration(payload.calibration, predictions.probabilities)
    calibration = calibration_metrics(predictions.labels, predictions.probabilities, calibrated,
                                      describe_calibration(payload.calibration))
    return {"model": payload.model_name, "checkpoint": checkpoint_dir, "split": split,
            "split_hash": source.split_hash, "checkpoint_split_hash": payload.split_hash,
            "n_images": len(predictions.image_index), "auroc": aurocs, "mean_auroc": mean_auroc(aurocs),
            "calibration": calibration, "tta": describe_tta(tta, contract.size)}
