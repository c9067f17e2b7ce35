"""The per-worker training loop: a pure function of its config dict (the Ray boundary).

Each epoch: train on this worker's rows (DDP; the loss summed over workers on the training device),
score this worker's share of the validation rows, gather them on rank 0 (every row exactly once) for the
AUROCs, step the scheduler, and on rank 0 save a checkpoint, uploaded while the next epoch trains, and
metrics.json. Epochs are numbered from 1 everywhere: on screen, in checkpoint folders (`epoch_0001`), in
checkpoints and in metrics.json.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from thorax_ray import console, storage
from thorax_ray.accel import FastPath
from thorax_ray.calibration import fit_calibration
from thorax_ray.checkpoint import (MODEL_FILE, CheckpointPayload, checkpoint_dir_name, checkpoint_uploaded,
                                   latest_loadable, save_checkpoint, write_run_metrics)
from thorax_ray.data.preprocess import PreprocessingContract, normalise_images, preprocessing_contract
from thorax_ray.losses import build_loss
from thorax_ray.metrics import mean_auroc, mean_binary_cross_entropy, per_class_auroc
from thorax_ray.models import MetadataFeatures, create_model, model_initialisation
from thorax_ray.models.predict import Predictions, predict_batches
from thorax_ray.monitoring.features import penultimate_features
from thorax_ray.monitoring.reference import validation_reference
from thorax_ray.node_check import require_cuda
from thorax_ray.thresholds import operating_points
from thorax_ray.train.augment import augment_batch
from thorax_ray.train.collectives import Collectives
from thorax_ray.train.config import LOWER_IS_BETTER, TrainConfig
from thorax_ray.train.feeds import DatasetFeed, TensorFeed, epoch_seed, rank_seed
from thorax_ray.train.lr_schedule import adam_settings, build_scheduler, describe_lr


def model_kwargs(config: TrainConfig) -> dict:
    kwargs = {"backbone": config.model.backbone} if config.model.name == "fusion" else {}
    if config.model.output_stride is not None:  # small_cnn's map resolution (ModelConfig)
        stride = {"output_stride": config.model.output_stride}
        kwargs.update({"backbone_kwargs": stride} if config.model.name == "fusion" else stride)
    return kwargs


def check_same_architecture(run_dir: str, saved: dict, asked: dict) -> None:
    """A resumed run continues the architecture its checkpoints hold: settings that change the computation
    but not the weights' shapes (small_cnn's output stride) would otherwise load silently into another one."""
    def key(build: dict) -> tuple:
        return build.get("name"), build.get("kwargs") or {}, build.get("metadata_features")

    if key(saved) != key(asked):
        raise ValueError(f"{run_dir}: its checkpoints are of {key(saved)[0]} {key(saved)[1]}, this run asks for "
                         f"{key(asked)[0]} {key(asked)[1]}; give another --name or the run's own settings")


def restore_state(run_dir: str, endpoint: str | None) -> CheckpointPayload | None:
    """The checkpoint to resume from: the newest complete one in the run's storage. Ray's registered
    checkpoint (`ray.train.get_checkpoint()`) is one of these folders (`RUN_DIR/epoch_NNNN`), but Ray
    registers a checkpoint only after its upload, so when a worker dies right after a report the
    registered one can lag an epoch behind what is already durable; reading storage covers both and
    loads one checkpoint (a torn upload is skipped). Epochs of checkpoints written before epochs were
    numbered from 1 are renumbered."""
    state = latest_loadable(run_dir, endpoint_url=endpoint)
    if state is None or state.epochs_from == 1:
        return state

    def shift(entry: dict | None) -> dict | None:
        return None if entry is None else {**entry, "epoch": entry["epoch"] + 1}

    return replace(state, epoch=state.epoch + 1, history=[shift(h) for h in state.history], best=shift(state.best))


def pretrained_weights(config: TrainConfig, info: dict):
    """The pretrained weights the driver read and put in the object store (thorax_ray/train/train.fit), else the
    config's value (the model reads them itself)."""
    if "pretrained_weights" not in info:
        return config.model.pretrained
    import ray  # deferred: Ray (absent on the GPU machine)

    return ray.get(info["pretrained_weights"])


def training_device() -> torch.device:
    """The worker's device as Ray Train assigns it (a GPU when the worker holds one)."""
    import ray.train.torch  # deferred: Ray (absent on the GPU machine)

    return ray.train.torch.get_device()


def distributed(model: torch.nn.Module, device: torch.device, world: int) -> torch.nn.Module:
    """DDP over Ray Train's process group; `model` is already on `device`. One worker trains the plain model
    (as Ray's prepare_model does: DDP would all-reduce every gradient with itself); the loop's own
    collectives (thorax_ray/train/collectives.py) still run at world size 1."""
    if world == 1:
        return model

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


@dataclass
class Worker:
    """Everything one training worker holds across epochs."""

    config: TrainConfig
    info: dict
    rank: int
    world: int
    device: torch.device
    collectives: Collectives
    fast: FastPath
    model: torch.nn.Module  # unwrapped (validation, checkpoints)
    trained: torch.nn.Module  # DDP (and compiled on GPU)
    optimizer: torch.optim.Optimizer
    scheduler: object
    loss_fn: torch.nn.Module
    contract: PreprocessingContract
    generator: torch.Generator
    feed: object  # DatasetFeed | TensorFeed
    history: list = field(default_factory=list)
    bests: list = field(default_factory=list)  # every epoch that was the best when it ended, oldest first
    model_bytes: dict = field(default_factory=dict)  # checkpoint name -> size of the model.pt rank 0 wrote
    resumes: list = field(default_factory=list)
    start_epoch: int = 1
    validation_reference: dict | None = None  # rank 0: the latest epoch's (thorax_ray.monitoring.reference)

    @property
    def best(self) -> dict | None:
        """The best epoch so far ({"epoch", "checkpoint", "val"})."""
        return self.bests[-1] if self.bests else None

    def say(self, text: str) -> None:
        if self.rank == 0:
            console.say(self.info["run_name"], text)


def train_loop_per_worker(loop_config: dict) -> None:
    worker = start_worker(loop_config)
    for epoch in range(worker.start_epoch, worker.config.optim.epochs + 1):
        started = time.monotonic()
        train_loss, train_images, train_seconds = train_epoch(worker, epoch)
        record = validate(worker, epoch, train_loss=train_loss, train_images=train_images,
                          train_seconds=train_seconds, started=started)
        end_epoch(worker, record, started)


def start_worker(loop_config: dict) -> Worker:
    """Model, optimiser, scheduler and data feed of this worker, resumed from the run's newest checkpoint."""
    import ray.train  # deferred: Ray (absent on the GPU machine)

    config = TrainConfig.from_dict(loop_config["config"])
    info = loop_config["info"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(config.run.threads_per_worker or config.run.cpus_per_worker)))
    torch.manual_seed(config.run.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    device = training_device()
    require_cuda(device)  # a GPU that cannot work stops the run here, in one line naming the node
    features = MetadataFeatures(tuple(config.model.metadata_features))
    model = create_model(config.model.name, metadata_features=features, pretrained=pretrained_weights(config, info),
                         **model_kwargs(config))
    spec = model.spec
    # GPU: bf16 autocast, channels_last, pinned batches copied one ahead, torch.compile (config.run.compile,
    # default on); CPU: none of it (thorax_ray/accel.py).
    fast = FastPath.for_device(device, compile=config.run.compile, images=spec.uses_images)
    fast.setup()
    state = restore_state(info["run_dir"], config.data.s3_endpoint)
    if state is not None:
        check_same_architecture(info["run_dir"], state.model_build_config, model.build_config)
        model.load_state_dict(state.model_state, strict=True)
    model = fast.prepare_model(model)  # on the device; channels_last for image models on GPU
    global_batch = config.batch_size * world  # lr rule: thorax_ray/train/lr_schedule.py
    optimizer = torch.optim.Adam(model.parameters(), **adam_settings(config.optim, global_batch).as_kwargs(),
                                 weight_decay=config.optim.weight_decay)
    scheduler = build_scheduler(config.optim, optimizer)
    if state is not None:
        optimizer.load_state_dict(state.optimizer_state)
        scheduler.load_state_dict(state.scheduler_state)
    if "encoded_rows" in info:
        import ray  # deferred: Ray (absent on the GPU machine)

        feed = TensorFeed(config, ray.get(info["encoded_rows"]), device=device, rank=rank, world=world)
    else:
        feed = DatasetFeed(config, stored_size=info["stored_size"], features=features, spec=spec, fast=fast,
                           rank=rank)
    worker = Worker(
        config=config, info=info, rank=rank, world=world, device=device, collectives=Collectives(device), fast=fast,
        model=model, trained=fast.maybe_compile(distributed(model, device, world)), optimizer=optimizer,
        scheduler=scheduler, contract=preprocessing_contract(config.data.size), feed=feed,
        loss_fn=build_loss(config.loss, label_counts=np.asarray(info["label_counts"]),
                           num_samples=info["train_rows"]).to(device),
        generator=torch.Generator())
    if state is not None:
        worker.history, worker.bests = list(state.history), [state.best] if state.best else []
        worker.start_epoch = state.epoch + 1
        worker.resumes = [*state.resumes, {"after_epoch": state.epoch,
                                                      "at": time.strftime("%Y-%m-%dT%H:%M:%S")}]
        worker.say(f"resuming after epoch {state.epoch} (checkpoints of epochs {[h['epoch'] for h in worker.history]})")
    worker.say(f"device {fast.describe()}; {describe_lr(config.optim, global_batch)} ({world} x {config.batch_size})")
    return worker


def train_epoch(worker: Worker, epoch: int) -> tuple[float, int, float]:
    """One pass over this worker's training rows; returns (mean loss over all workers, rows, seconds)."""
    started = time.monotonic()
    worker.generator.manual_seed(epoch_seed(worker.config.run.seed, epoch, worker.rank))  # augmentation draws
    # Dropout and every other draw from torch's global RNGs: a state of their own per (seed, epoch, rank), so
    # ranks draw different masks and an epoch resumed after a restart draws what it would have drawn.
    torch.manual_seed(rank_seed(worker.config.run.seed, epoch, worker.rank))
    worker.model.train()
    spec = worker.model.spec
    # Summed on the device: no host synchronisation per step (the GPU never waits for the CPU to read it).
    loss_sum, seen = torch.zeros((), dtype=torch.float64, device=worker.device), 0
    for batch in worker.feed.train_batches(epoch):
        loss = train_step(worker.trained, worker.optimizer, worker.loss_fn, batch, spec=spec,
                          contract=worker.contract, augment=worker.config.augment, generator=worker.generator,
                          fast=worker.fast)
        loss_sum += loss.detach().double() * len(batch.labels)
        seen += len(batch.labels)
    seconds = time.monotonic() - started
    total_loss, total_seen = worker.collectives.sum_values(loss_sum, seen)  # on the device: NCCL has no CPU backend
    return total_loss / max(total_seen, 1), int(total_seen), seconds


def validate(worker: Worker, epoch: int, *, train_loss: float, train_images: int, train_seconds: float,
             started: float) -> dict:
    """Every worker scores its share of the validation rows with the unwrapped model (no DDP, no padding);
    rank 0 gathers them (every row exactly once), computes the AUROCs, and every worker gets the record. The
    penultimate features of the same pass go to rank 0 too, for the checkpoint's validation reference (drift
    and out-of-distribution monitoring of scoring), which stays on rank 0."""
    began = time.monotonic()
    with penultimate_features(worker.model) as captured:
        mine = predict_batches(worker.model, worker.feed.val_batches(), contract=worker.contract,
                               device=worker.device, autocast_dtype=worker.fast.autocast_dtype)
    shares = worker.collectives.gather_objects((mine, captured.array()))
    record = None
    if worker.rank == 0:
        predictions = Predictions.concatenate(share for share, _ in shares)
        predictions.check_unique()
        val, calibration = summarise_validation(predictions)
        worker.validation_reference = reference_of(predictions, shares)
        now = time.monotonic()
        record = {"epoch": epoch, "train_loss": train_loss, "train_images": train_images,
                  "train_seconds": train_seconds, "val_seconds": now - began, "val_images": len(predictions.image_index),
                  "val": val, "lr": worker.optimizer.param_groups[0]["lr"], "seconds": now - started,
                  "calibration": calibration}
    return worker.collectives.broadcast_object(record)


def summarise_validation(predictions: Predictions) -> tuple[dict, dict | None]:
    """Rank 0's summary of every validation row: AUROCs, the validation loss (mean unweighted BCE), per-class
    thresholds chosen on these predictions (the checkpoint carries them; scoring gates boxes and overlays with
    them, thorax_ray/thresholds.py), and the per-finding calibration fitted on them (for the checkpoint only,
    not metrics.json: scoring writes calibrated probabilities beside the raw ones)."""
    if not len(predictions.labels):
        return {"auroc": {}, "mean_auroc": None, "loss": None, "operating_points": None}, None
    labels, probabilities = predictions.labels, predictions.probabilities
    aurocs = per_class_auroc(labels, probabilities)
    val = {"auroc": aurocs, "mean_auroc": mean_auroc(aurocs),
           "loss": mean_binary_cross_entropy(labels, probabilities),
           "operating_points": operating_points(labels, probabilities)}
    return val, fit_calibration(labels, probabilities)


def reference_of(predictions: Predictions, shares: list[tuple[Predictions, np.ndarray | None]]) -> dict | None:
    """The validation reference of the gathered `predictions` and each worker's (predictions, features), in the
    same order (a worker's features None with rows: its model captured none, and the reference has no feature
    model)."""
    scored = [(share, features) for share, features in shares if len(share.image_index)]
    if any(features is None or len(features) != len(share.image_index) for share, features in scored):
        return validation_reference(predictions.probabilities)
    return validation_reference(predictions.probabilities,
                                np.concatenate([features for _, features in scored]) if scored else None)


def end_epoch(worker: Worker, record: dict, started: float) -> None:
    """Scheduler step, best epoch, the epoch line, and rank 0's checkpoint (uploaded while the next epoch
    trains) and metrics.json; every worker reports (Ray Train's report is a barrier)."""
    import ray.train  # deferred: Ray (absent on the GPU machine)

    config, epoch = worker.config, record["epoch"]
    calibration = record.pop("calibration", None)
    val_mean = record["val"]["mean_auroc"]
    worker.scheduler.step(selected_metric(record["val"], config.optim.select_by))  # warm-up, then plateau, ...
    worker.history.append(record)
    if improves(record["val"], worker.best, config.optim.select_by):
        worker.bests.append({"epoch": epoch, "checkpoint": checkpoint_dir_name(epoch), "val": record["val"]})
    val_loss = record["val"].get("loss")
    metrics = {"epoch": epoch, "train_loss": record["train_loss"],
               "val_mean_auroc": val_mean if val_mean is not None else float("nan"),
               "val_loss": val_loss if val_loss is not None else float("nan"),
               **{f"val_auroc_{k.lower()}": (v if v is not None else float("nan"))
                  for k, v in record["val"]["auroc"].items()}}
    if worker.rank != 0:
        ray.train.report(metrics)
        return
    directory = tempfile.mkdtemp(prefix="thorax-checkpoint-")  # Ray deletes it once uploaded
    save_checkpoint(directory, checkpoint_payload(worker, epoch, calibration))
    worker.model_bytes[checkpoint_dir_name(epoch)] = os.path.getsize(os.path.join(directory, MODEL_FILE))
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory),
                     checkpoint_dir_name=checkpoint_dir_name(epoch),
                     checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC)
    record["wall_seconds"] = time.monotonic() - started
    write_run_metrics(worker.info["run_dir"], run_summary(config, worker.info, worker.history, worker.best,
                                                          worker.resumes, uploaded=uploaded_best(worker),
                                                          model_bytes=worker.model_bytes),
                      endpoint_url=config.data.s3_endpoint)


def uploaded_best(worker: Worker) -> dict | None:
    """The newest of the epochs that were the best when they ended whose checkpoint has arrived in storage:
    the best itself once its asynchronous upload is done, the previous best while it is still uploading."""
    for best in reversed(worker.bests):
        if checkpoint_uploaded(storage.join(worker.info["run_dir"], best["checkpoint"]),
                               worker.model_bytes.get(best["checkpoint"]), endpoint_url=worker.config.data.s3_endpoint):
            return best
    return None


def selected_metric(val: dict, select_by: str) -> float | None:
    """The validation value `OptimConfig.select_by` names ("val_mean_auroc" -> val["mean_auroc"], ...)."""
    return val.get(select_by.removeprefix("val_"))


def improves(val: dict, best: dict | None, select_by: str) -> bool:
    """Whether this epoch's validation beats the best so far on `select_by` (ties keep the earlier epoch)."""
    value = selected_metric(val, select_by)
    if value is None:
        return False
    previous = None if best is None else selected_metric(best["val"], select_by)
    if previous is None:
        return True
    return value < previous if select_by in LOWER_IS_BETTER else value > previous


def checkpoint_payload(worker: Worker, epoch: int, calibration: dict | None = None) -> CheckpointPayload:
    config, info = worker.config, worker.info
    return CheckpointPayload(
        model_name=config.model.name, model_build_config=worker.model.build_config,
        model_state=worker.model.state_dict(), optimizer_state=worker.optimizer.state_dict(),
        scheduler_state=worker.scheduler.state_dict(), epoch=epoch, epochs_from=1, config=config.to_dict(),
        preprocessing=worker.contract.to_dict(), split_hash=info["split_hash"], seed=config.run.seed,
        history=worker.history, best=worker.best, resumes=worker.resumes, run_name=info["run_name"],
        data_origin=info.get("data_origin"), operating_points=worker.history[-1]["val"]["operating_points"],
        calibration=calibration, validation_reference=worker.validation_reference)


def train_step(trained: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn, batch, *, spec, contract: PreprocessingContract,
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


def run_summary(config: TrainConfig, info: dict, history: list[dict], best: dict | None, resumes: list[dict], *,
                uploaded: dict | None, model_bytes: dict | None = None) -> dict:
    """metrics.json: `best_epoch` and `val` of the best epoch; `best_checkpoint` names only a checkpoint that has
    arrived in storage (`uploaded`), `best_checkpoint_pending` the best's while its upload runs, with the size
    of its model.pt (the driver completes the pointer when the run ends: train.finish_best_pointer)."""
    pending = best["checkpoint"] if best and (uploaded is None or uploaded["epoch"] != best["epoch"]) else None
    return {"model": config.model.name, "run_name": info["run_name"], "split_hash": info["split_hash"],
            "data": config.data.data, "best_epoch": best["epoch"] if best else None,
            "best_checkpoint": uploaded["checkpoint"] if uploaded else None, "best_checkpoint_pending": pending,
            "best_checkpoint_pending_bytes": (model_bytes or {}).get(pending) if pending else None,
            "val": best["val"] if best else None, "epochs_run": len(history), "history": history, "resumes": resumes,
            "init": model_initialisation(config.model.name, config.model.pretrained, config.model.backbone),
            "config": config.to_dict()}


def epoch_line(record: dict, epochs: int) -> str:
    """The console line of one epoch (printed by the driver from metrics.json, see trainer.watch_epochs)."""
    return (f"epoch {record['epoch']}/{epochs} train_loss {record['train_loss']:.4f} val_loss "
            f"{_fmt(record['val'].get('loss'))} val_mean_auroc "
            f"{_fmt(record['val']['mean_auroc'])} ({record['val_images']} images) lr {record['lr']:.1e} "
            f"{record.get('wall_seconds', record['seconds']):.1f}s")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


