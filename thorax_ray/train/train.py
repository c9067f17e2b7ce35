"""Builds and runs the Ray Train `TorchTrainer` for a `TrainConfig` (driver side)."""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass

from thorax_ray import console, storage
from thorax_ray.checkpoint import checkpoint_uploaded, run_metrics, write_run_metrics
from thorax_ray.cluster import ClusterCapacity, check_shared_storage, cluster_capacity, resolve_use_gpu
from thorax_ray.data.sources import open_source
from thorax_ray.models import MetadataFeatures, get_model_spec
from thorax_ray.models.pretrained import read_model_weights
from thorax_ray.placement import keep_data_on_role_nodes, training_placement, wait_until_placed
from thorax_ray.ray_settings import TRAIN_POLL_ENV
from thorax_ray.train.config import LOWER_IS_BETTER, TrainConfig
from thorax_ray.train.feeds import encode_rows
from thorax_ray.train.loop import epoch_line, train_loop_per_worker
from thorax_ray.train.lr_schedule import describe_lr

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: str
    metrics: dict  # the run's metrics.json
    error: Exception | None = None


def ray_storage(uri: str, endpoint_url: str | None) -> tuple[str, object | None]:
    """(storage_path, storage_filesystem) for RunConfig: absolute local paths; s3:// through pyarrow with the
    storage retry budget and the endpoint of an S3-compatible store when one is configured
    (`storage.arrow_filesystem`: Ray Train's own filesystem for a bare URI would retry 3 times)."""
    if not storage.is_remote(uri):
        return os.path.abspath(uri), None
    if uri.startswith("s3://"):
        filesystem, path = storage.arrow_filesystem(uri, endpoint_url=endpoint_url)
        return path, filesystem
    return uri, None


ROW_OVERHEAD_BYTES = 256  # labels and metadata of one row, roughly


def estimated_bytes(rows: int, image_side: int) -> int:
    return rows * (image_side * image_side + ROW_OVERHEAD_BYTES)


def cache_if_small(dataset, size_bytes: int, budget_mb: int, *, what: str = "training"):
    """Materializes rows in the object store once when they fit the budget, so epochs after the first
    re-read nothing (no read tasks competing with training for CPUs); larger data streams."""
    if size_bytes > budget_mb * 2**20:
        return dataset
    console.say("train", f"caching the {what} rows in the object store "
                         f"({size_bytes / 2**20:.0f} MB <= {budget_mb} MB)")
    return dataset.materialize()


def shuffled_every_epoch(dataset, seed: int):
    """The dataset's blocks in a new random order at every execution (every epoch), reproducible from the
    run's seed, and delivered in that order (`preserve_order`; otherwise the order blocks finish in would
    decide); the training loop also shuffles rows within a buffer (`data.shuffle_buffer_rows`)."""
    from ray.data import RandomSeedConfig  # deferred: Ray (absent on the GPU machine)

    shuffled = dataset.randomize_block_order(seed=RandomSeedConfig(seed=seed, reseed_after_execution=True))
    shuffled.context.execution_options.preserve_order = True
    return shuffled


def encoded_rows(source, config: TrainConfig):
    """The training and validation rows' encoded metadata features and labels, in the object store
    (a few MB for the 112k NIH rows)."""
    import ray  # deferred: Ray (absent on the GPU machine)

    features = MetadataFeatures(tuple(config.model.metadata_features))
    return ray.put({split: encode_rows(source.rows(split), features) for split in ("train", "val")})


def ingest_config():
    """Ray Train's data config: the training rows split between workers, in the order they come (so one
    worker's order is reproducible from the seed; with several, which rows go to which worker depends on
    timing); the validation rows split too, without dropping any (`equal=False`): each row on exactly one
    worker and read once per epoch in total. (A dataset Ray Train does not split is every worker's full
    iterator: N workers would read all of it N times an epoch.) The loop gathers every worker's predictions."""
    import ray.train  # deferred: Ray (absent on the GPU machine)
    from ray.data import DataContext, ExecutionOptions  # deferred: Ray (absent on the GPU machine)

    class SplitValidation(ray.train.DataConfig):
        """`DataConfig.configure`, but "val" is streamed to the workers with every row kept (the base class
        splits with `equal=True`, which drops rows to even the shares: right for DDP training only)."""

        def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
            rest = {name: ds for name, ds in datasets.items() if name != VALIDATION}
            shards = (super().configure(rest, world_size, worker_handles, worker_node_ids, **kwargs) if rest
                      else [{} for _ in range(world_size)])
            if VALIDATION in datasets:
                for shard, split in zip(shards, datasets[VALIDATION].streaming_split(world_size, equal=False)):
                    shard[VALIDATION] = split
            return shards

    current = DataContext.get_current().execution_options
    ordered = ExecutionOptions(resource_limits=current.resource_limits, preserve_order=True,
                               verbose_progress=current.verbose_progress)
    return SplitValidation(datasets_to_split=["train", VALIDATION], execution_options={"train": ordered})


VALIDATION = "val"


def fit(config: TrainConfig, *, callbacks: list | None = None, capacity: ClusterCapacity | None = None,
        progress: bool = True, wait_for_placement: bool = True) -> TrainResult:
    """Trains `config` to the end (or resumes its run). `callbacks`: extra Ray Train callbacks for the
    RunConfig, e.g. Tune's `TuneReportCallback` when a Tune trial runs this (thorax_ray/tune). `capacity`:
    what the cluster has and can launch (default: read now); GPU use and storage are checked against it
    before any data is opened. `progress`: one console line per epoch (from metrics.json). `wait_for_placement`:
    the placement plan said in one line and the worker group placed within `run.placement_timeout_s`
    (thorax_ray.placement) before the trainer starts (a Tune trial's placement is the sweep's to wait for)."""
    import ray  # deferred: Ray (absent on the GPU machine)
    import ray.train  # deferred: Ray (absent on the GPU machine)
    from ray.train.torch import TorchTrainer  # deferred: Ray (absent on the GPU machine)

    capacity = capacity or cluster_capacity(config.run.cluster_config)
    use_gpu = check_cluster(config, capacity)
    spec = get_model_spec(config.model.name)
    source = open_source(config.data)
    label_counts, train_rows = source.label_counts("train")
    run_dir = storage.join(config.run.storage if storage.is_remote(config.run.storage)
                           else os.path.abspath(config.run.storage), config.run_name)
    info = {"run_name": config.run_name, "run_dir": run_dir, "split_hash": source.split_hash,
            "label_counts": label_counts.tolist(), "train_rows": int(train_rows),
            "stored_size": source.stored_size,
            "data_origin": source.data_origin}  # recorded when the source was resolved
    console.say("train", f"{config.model.name} on {source.kind} data {config.data.data} ({train_rows} train rows, "
                         f"split {source.split_hash}), {config.run.workers} workers on {'GPUs' if use_gpu else 'CPUs'}, "
                         f"{describe_lr(config.optim, config.batch_size * config.run.workers)}, run {run_dir}")
    placement = training_placement(workers=config.run.workers, cpus_per_worker=config.run.cpus_per_worker,
                                   use_gpu=use_gpu, capacity=capacity)
    if wait_for_placement:  # before any data is read: the data tasks run on the nodes it brings up
        console.say("train", placement.describe())
        wait_until_placed(placement, timeout_s=config.run.placement_timeout_s, stage="train")
    keep_data_on_role_nodes(placement)
    datasets = image_datasets(config, source, train_rows, placement.task_resources()) if spec.uses_images else {}
    if not spec.uses_images:  # the metadata model: rows encoded once here, sliced as tensors by the workers (feeds)
        info["encoded_rows"] = encoded_rows(source, config)
    weights = read_model_weights(config.model.name, config.model.pretrained, config.model.backbone)
    if weights is not None:  # read once, here (where the job checked them), not from each worker node's cache
        info["pretrained_weights"] = ray.put(weights)
    storage_path, storage_filesystem = ray_storage(config.run.storage, config.data.s3_endpoint)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.to_dict(), "info": info},
        scaling_config=ray.train.ScalingConfig(num_workers=config.run.workers, use_gpu=use_gpu,
                                               resources_per_worker=placement.ask),
        run_config=ray.train.RunConfig(
            name=config.run_name, storage_path=storage_path, storage_filesystem=storage_filesystem,
            failure_config=ray.train.FailureConfig(max_failures=config.run.max_failures),
            checkpoint_config=checkpoint_retention(config),
            callbacks=list(callbacks or []),
        ),
        datasets=datasets or None,
        dataset_config=ingest_config() if datasets else None,
    )
    with watch_epochs(run_dir, config, enabled=progress), report_polling():
        result = trainer.fit()
    metrics = finish_best_pointer(run_dir, config.data.s3_endpoint)
    return TrainResult(run_dir=run_dir, metrics=metrics, error=getattr(result, "error", None))


def image_datasets(config: TrainConfig, source, train_rows: int, task_resources: dict[str, float]) -> dict:
    """The training and validation datasets of an image model: training shuffled every epoch, both cached in
    the object store when they fit; both split between the workers (ingest_config), so read once an epoch in
    total; their tasks ask for `task_resources` (the training node role) besides CPUs."""
    shuffle_seed = config.run.seed if config.data.shuffle else None
    train = cache_if_small(source.dataset("train", images=True, shuffle_seed=shuffle_seed, task_resources=task_resources),
                           estimated_bytes(train_rows, source.stored_size), config.data.cache_train_mb)
    val = cache_if_small(source.dataset("val", images=True, task_resources=task_resources),
                         estimated_bytes(len(source.rows("val")),
                         source.stored_size), config.data.val_cache_mb, what="validation")
    return {"train": shuffled_every_epoch(train, config.run.seed) if config.data.shuffle else train, "val": val}


def checkpoint_retention(config: TrainConfig):
    """Ray Train keeps the `run.keep_checkpoints` best checkpoints by `optim.select_by` (so the best one among
    them), plus the latest (what a restart resumes from) and those still uploading; None keeps every one."""
    import ray.train  # deferred: Ray (absent on the GPU machine)

    keep = config.run.keep_checkpoints
    if keep is None:
        return ray.train.CheckpointConfig(num_to_keep=None)
    return ray.train.CheckpointConfig(
        num_to_keep=keep, checkpoint_score_attribute=config.optim.select_by,
        checkpoint_score_order="min" if config.optim.select_by in LOWER_IS_BETTER else "max")


def finish_best_pointer(run_dir: str, endpoint: str | None) -> dict:
    """metrics.json after the run: the best checkpoint, uploading when rank 0 last wrote the file, is named
    once it is in storage (Ray Train has finished its uploads when `fit` returns; checked, not assumed)."""
    metrics = run_metrics(run_dir, endpoint_url=endpoint) or {}
    pending = metrics.get("best_checkpoint_pending")
    if pending and checkpoint_uploaded(storage.join(run_dir, pending), metrics.get("best_checkpoint_pending_bytes"),
                                       endpoint_url=endpoint):
        metrics.update(best_checkpoint=pending, best_checkpoint_pending=None, best_checkpoint_pending_bytes=None)
        write_run_metrics(run_dir, metrics, endpoint_url=endpoint)
    return metrics


# How often Ray Train's controller polls the workers (Ray's default: 2 s). It takes at most one report per
# worker and poll, and `ray.train.report` blocks while the previous report waits, so every epoch lasted at
# least one interval: 2 s for the metadata MLP's 0.2-0.5 s epochs, plus one interval per queued report at
# the end of a run. Polling is one small RPC per worker.
REPORT_POLL_SECONDS = 0.5
POLL_ENV = TRAIN_POLL_ENV  # read by the controller, which Ray gives the driver's value (thorax_ray.ray_settings)


@contextlib.contextmanager
def report_polling(seconds: float = REPORT_POLL_SECONDS):
    """Ray Train's controller polls every `seconds` for the runs started inside (a value already set in the
    environment by the user is kept): Ray Train hands this variable from the driver to its controller."""
    if POLL_ENV in os.environ:
        yield
        return
    os.environ[POLL_ENV] = str(seconds)
    try:
        yield
    finally:
        os.environ.pop(POLL_ENV, None)


@contextlib.contextmanager
def watch_epochs(run_dir: str, config: TrainConfig, *, enabled: bool = True, interval_s: float = 2.0):
    """Prints one line per finished epoch while the run trains, read from the run's metrics.json (rank 0
    writes it after every epoch), so the lines come from the driver: no Ray prefix, no worker output."""
    if not enabled:
        yield
        return
    endpoint = config.data.s3_endpoint
    shown = {"epochs": {h["epoch"] for h in (run_metrics(run_dir, endpoint_url=endpoint) or {}).get("history", [])},
             "resumes": len((run_metrics(run_dir, endpoint_url=endpoint) or {}).get("resumes", []))}
    stop = threading.Event()

    def show() -> None:
        try:
            metrics = run_metrics(run_dir, endpoint_url=endpoint) or {}
        except Exception:  # noqa: BLE001 - a line missed now is shown at the next poll
            return
        resumes = metrics.get("resumes", [])
        for resume in resumes[shown["resumes"]:]:
            console.say(config.run_name, f"resumed after epoch {resume['after_epoch']} (a worker restarted or "
                                         "the run was started again)")
        shown["resumes"] = len(resumes)
        for record in metrics.get("history", []):
            if record["epoch"] not in shown["epochs"]:
                shown["epochs"].add(record["epoch"])
                console.say(config.run_name, epoch_line(record, config.optim.epochs))

    def poll() -> None:
        while not stop.wait(interval_s):
            show()

    thread = threading.Thread(target=poll, name="thorax-epochs", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
        show()


def check_cluster(config: TrainConfig, capacity: ClusterCapacity) -> bool:
    """Fails now, with one line, when the cluster can never run `config` (GPUs it cannot provide, local
    paths on a multi-node cluster); returns whether the workers use GPUs."""
    use_gpu = resolve_use_gpu(config.run.use_gpu, capacity, gpus_needed=config.run.workers,
                              what=f"training with {config.run.workers} worker(s)")
    check_shared_storage(config.run.storage, capacity, what="--storage", shared_fs=config.run.shared_fs)
    check_shared_storage(config.data.data, capacity, what="--data", shared_fs=config.run.shared_fs)
    return use_gpu
