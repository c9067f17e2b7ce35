"""The Ray Data pipeline of a scoring run: read/decode (CPU tasks) -> an autoscaling pool of model actors
(`Scorer`) -> the staging datasink, with the object-store memory it may hold bounded."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import pandas as pd

from thorax_ray.checkpoint import CheckpointPayload
from thorax_ray.cluster import SCORE_ROLE, ClusterCapacity, resolve_use_gpu
from thorax_ray.data.inputs import InputSource
from thorax_ray.data.pipeline import ImageConfig, load_images, manifest_dataset
from thorax_ray.data.preprocess import PreprocessingContract
from thorax_ray.data.shards import read_prepared
from thorax_ray.placement import Placement, custom_resources, scoring_placement, sized_actor_cpus, wait_until_placed
from thorax_ray.ray_settings import DATA_DEPRECATED_REMOTE_ARGS
from thorax_ray.scoring.config import ScoreConfig
from thorax_ray.scoring.scorer import Scorer, ScorerSettings, prepared_batch


@dataclass(frozen=True)
class ActorPlan:
    """The model actors of a run: an autoscaling pool of `min_actors..max_actors`, each with `gpus` GPUs and
    `cpus` CPUs (as many torch threads), on the scoring node type when the cluster is steered (`placement`)."""

    min_actors: int
    max_actors: int
    gpus: float
    cpus: float
    placement: Placement

    def describe(self) -> str:
        return f"{self.min_actors}..{self.max_actors}" + (f" x {self.gpus:g} GPU" if self.gpus else " CPU")


def plan_actors(config: ScoreConfig, capacity: ClusterCapacity) -> ActorPlan:
    """GPU use, pool size and actor CPUs from what the cluster has or its autoscaler can launch on the scoring
    node type (checked before work)."""
    if config.gpus_per_actor <= 0 or config.min_actors < 1 or (config.max_actors is not None and config.max_actors < 1):
        raise ValueError(f"bad actor settings: gpus_per_actor={config.gpus_per_actor} (> 0), "
                         f"min_actors={config.min_actors}, max_actors={config.max_actors} (>= 1)")
    use_gpu = resolve_use_gpu(config.use_gpu, capacity, gpus_needed=config.gpus_per_actor, what="scoring",
                              role=SCORE_ROLE)
    gpus = config.gpus_per_actor if use_gpu else 0.0
    most = max(1, int(capacity.gpus_for(SCORE_ROLE) // gpus)) if use_gpu else 1
    max_actors = config.max_actors or most
    min_actors = min(config.min_actors, max_actors)
    cpus = config.actor_cpus or sized_actor_cpus(capacity, gpus=gpus)
    placement = scoring_placement(min_actors=min_actors, max_actors=max_actors, cpus=cpus, gpus=gpus,
                                  capacity=capacity)
    return ActorPlan(min_actors=min_actors, max_actors=max_actors, gpus=gpus, cpus=cpus, placement=placement)


@dataclass(frozen=True)
class ScoringRun:
    """What one scoring run resolved before taking the output's lease."""

    config: ScoreConfig
    source: InputSource
    payload: CheckpointPayload
    model: object
    model_id: str
    checkpoint_dir: str
    method: str
    actor_plan: ActorPlan
    run_id: str
    batch_date: str
    started: float
    now: float
    origin: dict


def stream(run: ScoringRun, pending: pd.DataFrame, gate, sink, filesystem, counter) -> None:
    """read/decode -> the autoscaling pool of model actors -> the staging datasink, memory bounded."""
    from ray.data import ActorPoolStrategy  # deferred: Ray (absent on the GPU machine)

    config, source = run.config, run.source
    contract = PreprocessingContract.from_dict(run.payload.preprocessing)
    dataset = input_dataset(config, source, pending, run.model, contract, filesystem,
                            run.actor_plan.placement.task_resources(config.decode_cpus))
    # Prepared inputs travel at the size they were prepared at, raw PNGs are decoded to the contract's.
    stored_size = int(source.prepared["size"]) if source.kind == "prepared" else contract.size
    plan = run.actor_plan
    # the pool's first actors placed (the autoscaler launching nodes for them), or exit 75
    wait_until_placed(plan.placement, timeout_s=config.placement_timeout_s, stage="score")
    settings = ScorerSettings.from_config(
        replace(config, actor_cpus=plan.cpus), checkpoint_dir=run.checkpoint_dir, model_id=run.model_id, method=run.method,
        stored_size=stored_size, run_id=run.run_id, batch_date=run.batch_date, box_min_probability=gate.thresholds)
    with warnings.catch_warnings():
        # max_restarts has no named parameter in Ray 2.60 and **ray_remote_args warns of its removal in 2.64
        # (thorax_ray.ray_settings; tests/test_ray_settings.py fails when Ray drops the warning)
        warnings.filterwarnings("ignore", message=DATA_DEPRECATED_REMOTE_ARGS, category=DeprecationWarning)
        scored_rows = dataset.map_batches(
            Scorer, fn_constructor_kwargs={"settings": settings, "progress": counter},
            compute=ActorPoolStrategy(min_size=plan.min_actors, max_size=plan.max_actors),
            batch_size=config.batch_size, batch_format="pyarrow", num_cpus=plan.cpus, num_gpus=plan.gpus or None,
            # Not restarted: Ray Data hands its actors their constructor arguments through the object store,
            # which a restarted actor may no longer find (Ray's warning, ray-project/ray#53727). An actor that
            # dies ends the run with nothing committed (its lease released); the next run scores those images.
            max_restarts=ACTOR_RESTARTS,
            **({"resources": custom_resources(plan.placement.ask)} if plan.placement.role else {}),
        )
    bound_in_flight(scored_rows, in_flight_bytes(config, contract, plan.max_actors, stored_size=stored_size,
                                                 largest_block=largest_read_block(source, contract, stored_size)))
    scored_rows.write_datasink(sink)


ACTOR_RESTARTS = 0
MIN_IN_FLIGHT_BYTES = 64 * 2**20
IN_FLIGHT_BATCHES_PER_ACTOR = 16
# Read blocks the bound leaves room for: the block being scored, its output, and the next block read.
BLOCKS_IN_FLIGHT = 3


def in_flight_bytes(config: ScoreConfig, contract: PreprocessingContract, actors: int, *,
                    stored_size: int | None = None, largest_block: int = 0) -> int:
    """How much decoded input and output the run may hold in the object store at once. Without a bound,
    decode tasks run ahead of slower model actors until the object store is full, so memory grows with
    the number of images; a few batches per actor keep the actors fed. Images are counted at
    `stored_size`, the side they travel at (default: the contract's size).

    The bound also leaves room for BLOCKS_IN_FLIGHT of the largest block a read task emits
    (`largest_block`, bytes): below that, Ray Data holds the actor's finished output back (its output
    budget is spent by the input block the actor is still holding) and the run stalls until an internal
    timeout frees it (measured on the demo's prepared input: 25 s of a 63 s run, at a 64 MiB bound and
    69 MiB read blocks)."""
    if config.in_flight_mb is not None:
        return config.in_flight_mb * 2**20
    image_bytes = int(stored_size or contract.size) ** 2 * contract.channels
    return max(MIN_IN_FLIGHT_BYTES, IN_FLIGHT_BATCHES_PER_ACTOR * actors * config.batch_size * image_bytes,
               BLOCKS_IN_FLIGHT * largest_block)


def largest_read_block(source: InputSource, contract: PreprocessingContract, stored_size: int) -> int:
    """Bytes of the largest block a read task emits: for prepared shards, the largest shard's images (Ray
    Data reads a file per task and splits its output at the context's target_max_block_size); decoded PNG
    batches are bounded by the per-actor term already."""
    if source.kind != "prepared":
        return 0
    from ray.data import DataContext  # deferred: Ray (absent on the GPU machine)

    rows = max((int(f.get("rows", 0)) for f in source.prepared.get("files", [])), default=0)
    block_cap = DataContext.get_current().target_max_block_size or rows * stored_size ** 2 * contract.channels
    return min(rows * stored_size ** 2 * contract.channels, block_cap)


def bound_in_flight(dataset, object_store_bytes: int) -> None:
    """Limits the object-store memory the dataset's execution uses (Ray Data backpressures on it)."""
    options = dataset.context.execution_options
    options.resource_limits = options.resource_limits.copy(object_store_memory=object_store_bytes)


def _row_columns(model) -> list[str]:
    columns = ["image_index", "path", "metadata_source"]
    if model.spec.uses_metadata:
        columns += [c for c in model.metadata_features.columns if c not in columns]
    return columns


def input_dataset(config: ScoreConfig, source: InputSource, pending: pd.DataFrame, model,
                  contract: PreprocessingContract, filesystem, task_resources: dict[str, float] | None = None):
    """Ray dataset of the rows to score, with decoded images for image models (streaming); its tasks ask for
    `task_resources` (the scoring node role) besides CPUs."""
    remote = {"resources": task_resources} if task_resources else {}
    import ray  # deferred: Ray (absent on the GPU machine)

    columns = _row_columns(model)
    image_config = ImageConfig(size=contract.size, batch_size=config.batch_size,
                               read_attempts=config.read_attempts, endpoint_url=config.endpoint_url)
    if not model.spec.uses_images:
        rows = pending[columns].reset_index(drop=True)
        if (rows["metadata_source"] == "csv").all():
            return manifest_dataset(rows, rows_per_block=config.batch_size * 8)
        # Files without a metadata row are read: their format checked, DICOM tags taken as metadata.
        return load_images(rows, image_config, filesystem=filesystem, num_cpus=config.decode_cpus, images=False,
                           resources=task_resources)
    if source.kind == "prepared":
        wanted = ray.put(frozenset(pending["image_index"]))
        stored = [c for c in columns if c != "metadata_source"]  # added by prepared_batch
        dataset = read_prepared(source.uri, columns=[*stored, "image"], record=source.prepared,
                                endpoint_url=config.endpoint_url, task_resources=task_resources)
        return dataset.map_batches(prepared_batch, fn_args=(wanted, config.endpoint_url),
                                   batch_format="pyarrow", batch_size=config.batch_size * 4, **remote)
    return load_images(pending[columns].reset_index(drop=True), image_config, filesystem=filesystem,
                       num_cpus=config.decode_cpus, sizes=True, resources=task_resources)
