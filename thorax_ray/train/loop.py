"""The per-worker training loop: a pure function of its config dict (the Ray boundary)."""
from __future__ import annotations

import math
import tempfile
import time

import numpy as np
import torch

from thorax_ray.accel import FastPath, prefetch_to_device
from thorax_ray.losses import build_loss
from thorax_ray.metrics import mean_auroc, per_class_auroc
from thorax_ray.models import MetadataFeatures, create_model, model_initialisation
from thorax_ray.predict import predict
from thorax_ray.thresholds import operating_points
from thorax_ray.train.augment import augment_batch
from thorax_ray.train.batches import batch_from_arrow, normalise_images
from thorax_ray.train.checkpoint import (checkpoint_dir_name, latest_loadable,
                                         save_checkpoint, write_run_metrics)
from thorax_ray.train.config import TrainConfig, preprocessing_contract
from thorax_ray.train.lr_schedule import build_scheduler, describe_lr, effective_lr


def model_kwargs(config: TrainConfig) -> dict:
    kwargs = {"backbone": config.model.backbone} if config.model.name == "fusion" else {}
    if config.model.output_stride is not None:  # small_cnn's map resolution (ModelConfig)
        stride = {"output_stride": config.model.output_stride}
        kwargs.update({"backbone_kwargs": stride} if config.model.name == "fusion" else stride)
    return kwargs


class ValidationRows:
    """The validation rows as pyarrow batches; kept in memory after the first pass when they fit in
    `cache_bytes`, so later epochs skip re-reading (and re-executing) the validation dataset."""

    def __init__(self, iterator, batch_size: int, cache_bytes: int):
        self.iterator, self.batch_size, self.cache_bytes = iterator, batch_size, cache_bytes
        self.cached: list | None = None

    def __iter__(self):
        if self.cached is not None:
            yield from self.cached
            return
        kept, size = [], 0
        for table in self.iterator.iter_batches(batch_size=self.batch_size, batch_format="pyarrow"):
            size += table.nbytes
            if kept is not None and size <= self.cache_bytes:
                kept.append(table)
            else:
                kept = None
            yield table
        self.cached = kept


def restore_state(run_dir: str, endpoint: str | None) -> dict | None:
    """The checkpoint to resume from: the newest complete one in the run's storage. Ray's registered
    checkpoint (`ray.train.get_checkpoint()`) is one of these folders (`RUN_DIR/epoch_NNNN`), but Ray
    registers a checkpoint only after its upload, so when a worker dies right after a report the
    registered one can lag an epoch behind what is already durable; reading storage covers both and
    loads one checkpoint (a torn upload is skipped)."""
    return latest_loadable(run_dir, endpoint_url=endpoint)


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    config = TrainConfig.from_dict(loop_config["config"])
    info = loop_config["info"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(config.run.threads_per_worker or config.run.cpus_per_worker)))
    torch.manual_seed(config.run.seed)
    device = ray.train.torch.get_device()

    features = MetadataFeatures(tuple(config.model.metadata_features))
    model = create_model(config.model.name, metadata_features=features, pretrained=config.model.pretrained,
                         **model_kwargs(config))
    spec = model.spec
    # GPU: bf16 autocast, channels_last, pinned batches copied one ahead, torch.compile (config.run.compile,
    # default on); CPU: none of it (thorax_ray/accel.py).
    fast = FastPath.for_device(device, compile=config.run.compile, images=spec.uses_images)
    fast.setup()
    state = restore_state(info["run_dir"], config.data.s3_endpoint)
    if state is not None:
        model.load_state_dict(state["model_state"], strict=True)
    model = fast.prepare_model(model)  # on the device; channels_last for image models on GPU
    trained = fast.maybe_compile(ray.train.torch.prepare_model(model))
    global_batch = config.data.batch_size * world  # lr rule: thorax_ray/train/lr_schedule.py
    optimizer = torch.optim.Adam(model.parameters(), lr=effective_lr(config.optim, global_batch),
                                 betas=config.optim.betas, weight_decay=config.optim.weight_decay)
    scheduler = build_scheduler(config.optim, optimizer)
    if state is not None:
        optimizer.load_state_dict(state["optimizer_state"])
        scheduler.load_state_dict(state["scheduler_state"])
    loss_fn = build_loss(config.loss, label_counts=np.asarray(info["label_counts"]), num_samples=info["train_rows"]).to(device)
    contract = preprocessing_contract(config.data.size)
    generator = torch.Generator().manual_seed(config.run.seed * 1000 + rank)
    history = list(state["history"]) if state else []
    best = state.get("best") if state else None
    start_epoch = state["epoch"] + 1 if state else 0
    resumes = list(state.get("resumes", [])) if state else []
    if state is not None:
        resumes.append({"after_epoch": state["epoch"], "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        if rank == 0:
            print(f"[{info['run_name']}] resuming after epoch {state['epoch'] + 1} (checkpoint history: "
                  f"{[h['epoch'] + 1 for h in history]})", flush=True)

    if rank == 0:
        print(f"[{info['run_name']}] device {fast.describe()}; {describe_lr(config.optim, global_batch)} "
              f"({world} x {config.data.batch_size})", flush=True)

    def host_batch(table):
        return batch_from_arrow(table, stored_size=info["stored_size"],
                                features=features if spec.uses_metadata else None, images=spec.uses_images)

    train_shard = ray.train.get_dataset_shard("train")
    val_rows = ValidationRows(ray.train.get_dataset_shard("val"), config.data.eval_batch_size,
                              config.data.val_cache_mb * 2**20)
    for epoch in range(start_epoch, config.optim.epochs):
        started = time.monotonic()
        generator.manual_seed(config.run.seed * 1000 + rank + 7919 * epoch)
        model.train()
        # Summed on the device: no host synchronisation per step (the GPU never waits for the CPU to read it).
        loss_sum, seen = torch.zeros((), dtype=torch.float64, device=device), 0
        tables = train_shard.iter_batches(batch_size=config.data.batch_size, batch_format="pyarrow",
                                          drop_last=True, prefetch_batches=fast.prefetch_batches)
        for batch in prefetch_to_device(tables, fast, make=host_batch):
            loss = train_step(trained, optimizer, loss_fn, batch, spec=spec, contract=contract,
                              augment=config.augment, generator=generator, fast=fast)
            loss_sum += loss.detach().double() * len(batch.labels)
            seen += len(batch.labels)
        train_seconds = time.monotonic() - started
        totals = torch.tensor([float(loss_sum), seen], dtype=torch.float64)
        if world > 1:
            torch.distributed.all_reduce(totals)
        train_loss = float(totals[0] / max(totals[1], 1))

        # Validation on rank 0 alone, with the unwrapped model and the unsplit dataset: every
        # validation row exactly once, no DDP padding, no collectives inside.
        record = None
        if rank == 0:
            predictions = predict(model, val_rows,
                                  contract=contract, stored_size=info["stored_size"], device=device,
                                  autocast_dtype=fast.autocast_dtype)
            aurocs = per_class_auroc(predictions.labels, predictions.probabilities) if len(predictions.labels) else {}
            # Per-class thresholds for this epoch's weights, chosen on these validation predictions: the
            # checkpoint carries them and scoring gates boxes and overlays with them (thorax_ray/thresholds.py).
            points = (operating_points(predictions.labels, predictions.probabilities)
                      if len(predictions.labels) else None)
            record = {"epoch": epoch, "train_loss": train_loss, "train_images": int(totals[1]),
                      "train_seconds": train_seconds, "val_images": len(predictions.image_index),
                      "val": {"auroc": aurocs, "mean_auroc": mean_auroc(aurocs), "operating_points": points},
                      "lr": optimizer.param_groups[0]["lr"], "seconds": time.monotonic() - started}
        record = _broadcast(record, world)
        val_mean = record["val"]["mean_auroc"]
        if config.optim.scheduler == "plateau":
            scheduler.step(val_mean if val_mean is not None else 0.0)
        else:
            scheduler.step()
        history.append(record)
        if val_mean is not None and (best is None or val_mean > best["val"]["mean_auroc"]):
            best = {"epoch": epoch, "checkpoint": checkpoint_dir_name(epoch), "val": record["val"]}
        metrics = {"epoch": epoch, "train_loss": train_loss,
                   "val_mean_auroc": val_mean if val_mean is not None else float("nan"),
                   **{f"val_auroc_{k.lower()}": (v if v is not None else float("nan")) for k, v in record["val"]["auroc"].items()}}
        if rank == 0:
            print(f"[{info['run_name']}] epoch {epoch + 1}/{config.optim.epochs} train_loss {train_loss:.4f} "
                  f"val_mean_auroc {_fmt(val_mean)} ({record['val_images']} images) lr {record['lr']:.1e} "
                  f"{record['seconds']:.1f}s", flush=True)
            payload = {"model_name": config.model.name, "model_build_config": model.build_config,
                       "model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(),
                       "scheduler_state": scheduler.state_dict(), "epoch": epoch, "config": config.to_dict(),
                       "preprocessing": contract, "split_hash": info["split_hash"], "seed": config.run.seed,
                       "history": history, "best": best, "resumes": resumes, "run_name": info["run_name"],
                       "operating_points": record["val"]["operating_points"]}
            with tempfile.TemporaryDirectory() as directory:
                save_checkpoint(directory, payload)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory),
                                 checkpoint_dir_name=checkpoint_dir_name(epoch))
            write_run_metrics(info["run_dir"], run_summary(config, info, history, best, resumes),
                              endpoint_url=config.data.s3_endpoint)
        else:
            ray.train.report(metrics)


def train_step(trained: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn, batch, *, spec, contract: dict,
               augment, generator: torch.Generator, fast: FastPath) -> torch.Tensor:
    """One optimiser step on a batch whose tensors are already on the device; returns the loss (on the
    device, not synchronised). Images: uint8 -> normalised float -> augmented (on the device)."""
    images = None
    if spec.uses_images:
        images = normalise_images(batch.images, contract, device=fast.device)
        images = fast.images_layout(augment_batch(images, augment, generator))
    feats = batch.features.to(fast.device) if batch.features is not None else None
    labels = batch.labels.to(fast.device)
    with fast.autocast():
        logits = trained(*spec.model_inputs(images, feats))
    loss = loss_fn(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def run_summary(config: TrainConfig, info: dict, history: list[dict], best: dict | None, resumes: list[dict]) -> dict:
    return {"model": config.model.name, "run_name": info["run_name"], "split_hash": info["split_hash"],
            "data": config.data.data, "best_epoch": best["epoch"] if best else None,
            "best_checkpoint": best["checkpoint"] if best else None,
            "val": best["val"] if best else None, "epochs_run": len(history), "history": history, "resumes": resumes,
            "init": model_initialisation(config.model.name, config.model.pretrained, config.model.backbone),
            "config": config.to_dict()}


def _broadcast(record: dict | None, world: int) -> dict:
    if world == 1:
        return record
    box = [record]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


