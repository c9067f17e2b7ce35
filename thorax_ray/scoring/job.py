"""One scoring run: resolve the input, skip what this model already scored, stream the rest through
read/decode and a pool of model actors (`ActorPoolStrategy`) into staging Parquet files, then publish
and commit. Decoding runs as CPU tasks; when the actors hold only CPUs, Ray Data fuses it into them.

    summary = score(ScoreConfig(checkpoint="runs/cnn", input="s3://bucket/incoming/", out="s3://bucket/scores"))
    print(summary.format())

Every input row (every file of a folder input, see thorax_ray.scoring.inputs) ends in exactly one of:
scored (a row in the scores), skipped (already scored by the same model_id in a committed run),
quarantined (could not be read/decoded, with its reason), or deferred (left for the next run by
`max_images`); hidden files are ignored and counted. A model trained on synthetic data that scores
real-world images gets a warning, printed and recorded in the scores' metadata (thorax_ray.origin).
A run that fails or is killed commits nothing; the next run scores its images again, so every image
appears once per model_id.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field

import pandas as pd

from thorax_ray import storage
from thorax_ray.cluster import ClusterCapacity, check_shared_storage, cluster_capacity, resolve_use_gpu
from thorax_ray.lease import Lease, acquire_lease
from thorax_ray.attribution import DEFAULT_MAX_BOXES, DEFAULT_THRESHOLD, default_method_name, get_method
from thorax_ray.data.pipeline import ImageConfig, load_images, manifest_dataset
from thorax_ray.labels import FINDING_COLUMNS, FINDINGS
from thorax_ray.origin import ood_check
from thorax_ray.progress import StageProgress
from thorax_ray.scoring.gate import CALIBRATED, resolve_gate
from thorax_ray.scoring.inputs import ScoringInput, resolve_input
from thorax_ray.scoring.output import (FORMAT_VERSION, LOCK_FILE, QUARANTINE_DIR, SCORES_DIR, ScoresError,
                                       clean_uncommitted, feature_attribution_metadata, new_run_id, publish,
                                       quarantine_table, remove_staging, schema_metadata, score_schema,
                                       scored_index, staging_uri, write_commit, write_table_file)
from thorax_ray.scoring.scorer import (DEFAULT_BOX_GRID, DEFAULT_MAX_MAP_SIDE, NO_METHOD, Scorer,
                                       heatmap_description, prepared_batch, uses_maps)
from thorax_ray.train.checkpoint import build_model, load_payload_and_id, resolve_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreConfig:
    checkpoint: str  # checkpoint folder, or a training run folder (its best checkpoint)
    input: str  # see thorax_ray.scoring.inputs
    out: str
    metadata: str | None = None  # metadata CSV of a folder input (default: found by its usual names)
    method: str | None = None  # fast_cam (default for image models) | cam (raw CAM) | gradcam
    #                            | integrated_gradients | occlusion
    #                            | metadata_ig (default for the metadata MLP) | none (probabilities only)
    method_options: dict = field(default_factory=dict)
    batch_size: int = 32
    use_gpu: str | bool = "auto"  # auto: GPU actors when the cluster has or can launch GPUs | true | false
    gpus_per_actor: float = 1.0  # when on GPUs (fractions share a GPU between actors)
    min_actors: int = 1  # the actor pool grows from min to max with the work queued (the autoscaler adds nodes)
    max_actors: int | None = None  # default: GPUs up or launchable / gpus_per_actor on GPUs, else 1
    actor_cpus: float = 1.0  # CPUs per actor (= torch threads on CPU)
    cluster_config: str | None = None  # autoscaler config (default: $THORAX_CLUSTER_CONFIG, ~/ray_bootstrap_config.yaml)
    shared_fs: bool = False  # local --input/--out paths are on a filesystem every node mounts
    lock_wait_s: float = 0.0  # wait this long for another run on the same --out to finish (then: LeaseBusy)
    lock_ttl_s: float = 600.0  # a crashed run's lock is taken over after this long without renewal
    max_map_side: int | None = DEFAULT_MAX_MAP_SIDE  # pool larger maps to this many cells per side (None: keep)
    # Which findings get boxes (thorax_ray/scoring/gate.py): "calibrated" = the checkpoint's per-finding operating
    # points chosen on validation; a probability = the same gate for every finding; None = every boxed finding.
    box_min_probability: float | str | None = CALIBRATED
    box_threshold: float = DEFAULT_THRESHOLD  # on the 0..255 map scale
    max_boxes: int = DEFAULT_MAX_BOXES  # per finding
    box_grid: int | None = DEFAULT_BOX_GRID  # trace boxes on a grid of at most this side, then scale (None: full)
    max_images: int | None = None  # score at most this many new images per run (the rest: next run)
    rows_per_file: int = 8192
    compression: str = "zstd"
    read_attempts: int = 3
    decode_cpus: float = 1.0
    in_flight_mb: int | None = None  # object-store bytes the run may hold at once (None: from batch size and actors)
    keep_uncommitted_hours: float = 24.0  # files of runs that never committed are deleted after this
    run_id: str | None = None
    batch_date: str | None = None  # YYYY-MM-DD (default: the run's UTC start date)
    overlays: str | None = None  # folder for overlay PNGs
    overlay_limit: int = 8
    overlay_threshold: float | str | None = CALIBRATED  # which findings an overlay shows (same values as boxes)
    endpoint_url: str | None = None
    fail_after_rows: int | None = None  # tests only: every actor raises after this many rows


@dataclass
class ScoreSummary:
    out: str
    input: str
    run_id: str
    batch_date: str
    model_id: str
    model_name: str
    method: str
    input_rows: int
    scored: int
    skipped: int
    quarantined: dict[str, int]
    deferred: int
    files: int
    bytes: int
    elapsed_s: float
    compute_s: float
    model_s: float
    actors: str  # the pool's "min..max" actors, with "GPU" when on GPUs
    commit: str | None = None
    unknown_size: int = 0  # scored images whose original size was unknown: heatmaps but no boxes
    overlays: list[str] = field(default_factory=list)
    ignored: int = 0  # hidden files of a folder input
    metadata_sources: dict[str, int] = field(default_factory=dict)  # scored rows per metadata_source
    ood_warning: str | None = None

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def images_per_s(self) -> float:
        return self.scored / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def compute_images_per_s(self) -> float:
        """Images per second of actor time (time spent inside the scorer, summed over actors)."""
        return self.scored / self.compute_s if self.compute_s > 0 else 0.0

    @property
    def bytes_per_image(self) -> float:
        return self.bytes / self.scored if self.scored else 0.0

    def format(self) -> str:
        quarantine = ", ".join(f"{reason} {n}" for reason, n in sorted(self.quarantined.items())) or "none"
        lines = [
            f"run {self.run_id} (batch_date {self.batch_date}), model {self.model_name} model_id {self.model_id}, "
            f"method {self.method}",
            f"input            {self.input} ({self.input_rows} files"
            + (f"; {self.ignored} hidden files ignored)" if self.ignored else ")"),
            f"scored           {self.scored}"
            + (" (metadata: " + ", ".join(f"{k} {v}" for k, v in sorted(self.metadata_sources.items())) + ")"
               if self.metadata_sources else ""),
            f"skipped          {self.skipped} (already scored by this model_id)",
            f"quarantined      {self.quarantined_total} ({quarantine})",
        ]
        if self.unknown_size:
            lines.append(f"no boxes         {self.unknown_size} (original size unknown: source PNG unreadable)")
        if self.deferred:
            lines.append(f"deferred         {self.deferred} (over --max-images; scored by a later run)")
        lines += [
            f"output           {storage.join(self.out, SCORES_DIR)} ({self.files} files, {self.bytes} bytes, "
            f"{self.bytes_per_image:.0f} bytes/image); quarantine {storage.join(self.out, QUARANTINE_DIR)}",
            f"commit           {self.commit or 'none'}",
            f"elapsed {self.elapsed_s:.1f} s, {self.images_per_s:.1f} images/s end to end; "
            f"{self.compute_images_per_s:.1f} images/s of scorer time ({self.compute_s:.2f} s in {self.actors} "
            f"actors, of which model/attribution {self.model_s:.2f} s)",
        ]
        if self.ood_warning:
            lines.append(f"WARNING          {self.ood_warning}")
        if self.overlays:
            lines.append(f"overlays         {len(self.overlays)} PNGs in {self.overlays[0].rsplit('/', 1)[0]}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ActorPlan:
    """The model actors of a run: an autoscaling pool of `min_actors..max_actors`, each with `gpus` GPUs."""

    min_actors: int
    max_actors: int
    gpus: float

    def describe(self) -> str:
        return f"{self.min_actors}..{self.max_actors}" + (f" x {self.gpus:g} GPU" if self.gpus else " CPU")


def plan_actors(config: ScoreConfig, capacity: ClusterCapacity) -> ActorPlan:
    """GPU use and pool size from what the cluster has or its autoscaler can launch (checked before work)."""
    if config.gpus_per_actor <= 0 or config.min_actors < 1 or (config.max_actors is not None and config.max_actors < 1):
        raise ValueError(f"bad actor settings: gpus_per_actor={config.gpus_per_actor} (> 0), "
                         f"min_actors={config.min_actors}, max_actors={config.max_actors} (>= 1)")
    use_gpu = resolve_use_gpu(config.use_gpu, capacity, gpus_needed=config.gpus_per_actor, what="scoring")
    gpus = config.gpus_per_actor if use_gpu else 0.0
    most = max(1, int(capacity.most("GPU") // gpus)) if use_gpu else 1
    max_actors = config.max_actors or most
    return ActorPlan(min_actors=min(config.min_actors, max_actors), max_actors=max_actors, gpus=gpus)


def score(config: ScoreConfig, *, filesystem=None, capacity: ClusterCapacity | None = None) -> ScoreSummary:
    """Runs one scoring pass (Ray must be initialised); `filesystem` replaces storage for image reads;
    `capacity`: what the cluster has and can launch (default: read now). Holds the output's lease
    (`OUT/_lock.json`) from before it reads what is already scored until its commit, so runs that overlap on
    one output (from any machine) score each image once: the later one waits `lock_wait_s`, then stops with
    LeaseBusy."""
    started = time.monotonic()
    now = time.time()
    run_id = config.run_id or new_run_id(now)
    batch_date = config.batch_date or time.strftime("%Y-%m-%d", time.gmtime(now))
    endpoint = config.endpoint_url
    if config.batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {config.batch_size}")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", batch_date):
        raise ValueError(f"batch date must be YYYY-MM-DD, got {batch_date!r}")

    capacity = capacity or cluster_capacity(config.cluster_config)
    actor_plan = plan_actors(config, capacity)
    for uri, what in ((config.input, "--input"), (config.out, "--out")):
        check_shared_storage(uri, capacity, what=what, shared_fs=config.shared_fs)
    checkpoint_dir = resolve_checkpoint(config.checkpoint, endpoint_url=endpoint)
    payload, model_id = load_payload_and_id(checkpoint_dir, endpoint_url=endpoint)
    model = build_model(payload)
    method = config.method or default_method_name(model)
    if method != NO_METHOD:
        get_method(method)(model, **config.method_options)  # fails early on a method the model cannot use
    source = resolve_input(config.input, metadata_csv=config.metadata, endpoint_url=endpoint)
    log.info("scoring %s with %s (model_id %s, method %s) into %s, run %s",
             source.describe(), payload.get("model_name"), model_id, method, config.out, run_id)
    origin = ood_check(payload.get("data_origin"), source.data_origin)
    if origin["warning"]:
        log.warning("%s: %s", config.input, origin["warning"])

    run = _Run(config=config, source=source, payload=payload, model=model, model_id=model_id,
               checkpoint_dir=checkpoint_dir, method=method, actor_plan=actor_plan, run_id=run_id,
               batch_date=batch_date, started=started, now=now, origin=origin)
    lease = acquire_lease(storage.join(config.out, LOCK_FILE), ttl_s=config.lock_ttl_s, wait_s=config.lock_wait_s,
                          about={"run_id": run_id, "model_id": model_id}, endpoint_url=endpoint)
    try:
        summary = _score_locked(run, lease, filesystem)
    finally:
        lease.release()
    if config.overlays:
        from thorax_ray.scoring.overlays import write_overlays

        summary.overlays = write_overlays(config.out, source, config.overlays, model_id=model_id, run_id=run_id,
                                          limit=config.overlay_limit,
                                          threshold=resolve_gate(config.overlay_threshold, payload).thresholds,
                                          endpoint_url=endpoint)
    return summary


@dataclass(frozen=True)
class _Run:
    """What one scoring run resolved before taking the output's lease."""

    config: ScoreConfig
    source: ScoringInput
    payload: dict
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


def _score_locked(run: _Run, lease: Lease, filesystem) -> ScoreSummary:
    """The part of a run that needs the output's lease: what is already scored, the scoring, the commit."""
    config, source, payload, model, model_id = run.config, run.source, run.payload, run.model, run.model_id
    checkpoint_dir, method, actor_plan, run_id, batch_date = (run.checkpoint_dir, run.method, run.actor_plan,
                                                               run.run_id, run.batch_date)
    started, now, origin = run.started, run.now, run.origin
    endpoint = config.endpoint_url
    contract = payload["preprocessing"]
    if config.keep_uncommitted_hours is not None:
        clean_uncommitted(config.out, older_than_s=config.keep_uncommitted_hours * 3600, endpoint_url=endpoint)
    done = scored_index(config.out, model_id, endpoint_url=endpoint)
    is_done = source.rows["image_index"].isin(done)
    pending = source.rows.loc[~is_done]
    deferred = 0
    if config.max_images is not None and len(pending) > config.max_images:
        deferred = len(pending) - config.max_images
        pending = pending.head(config.max_images)
    skipped = int(is_done.sum())
    earlier_quarantine = _prepared_quarantine(source, done)
    skipped += 0 if source.prepared_quarantine is None else len(source.prepared_quarantine) - len(earlier_quarantine)

    maps = uses_maps(model, method)
    attributions = method != NO_METHOD and not model.spec.uses_images
    schema = score_schema(maps=maps, feature_attributions=attributions)
    heatmap = heatmap_description(model, contract, method, config.max_map_side) if maps else None
    features = (feature_attribution_metadata(model.metadata_features.names, method) if attributions else None)
    gate = resolve_gate(config.box_min_probability, payload)
    box_settings = {
        "frame": "pixels of the original image (the decoded PNG: columns width x height); x, y = top-left corner",
        "findings": "BOXED_FINDINGS (the 8 with ground-truth boxes in BBox_List_2017.csv)",
        "min_probability": gate.description, "threshold": config.box_threshold,
        "max_boxes_per_finding": config.max_boxes,
        "tracing": ("map upsampled bilinearly between its cell centres (heatmap cell_centres) "
                    + (f"to a grid of at most {config.box_grid} px per side, components boxed there and scaled to "
                       "original pixels" if config.box_grid else "to the original size")),
        "score": "mean map value (0..1) inside the box's connected component",
    } if maps else None
    description = {
        "format_version": FORMAT_VERSION, "model_id": model_id, "model_name": payload.get("model_name"),
        "checkpoint": checkpoint_dir, "method": method, "preprocessing": contract,
        "classes": list(FINDINGS), "probability_columns": list(FINDING_COLUMNS),
        "probabilities": "sigmoid of the model's logits, float32", "boxes": box_settings, "run_id": run_id,
        "model_init": (payload.get("model_build_config") or {}).get("init"),
        "batch_date": batch_date, "data_origin": origin,
    }
    metadata = schema_metadata(scores=description, heatmap=heatmap, features=features)

    from thorax_ray.scoring.sink import ScoresDatasink  # imports Ray: deferred so that scoring's modules import without it

    sink = ScoresDatasink(config.out, run_id, schema, metadata, rows_per_file=config.rows_per_file,
                          compression=config.compression, endpoint_url=endpoint)
    try:
        if len(pending):
            with StageProgress("score", total=len(pending)) as progress:
                _stream(run, pending, gate, sink, filesystem, progress.counter)
                progress.finish(sum(rows for w in sink.result for _, rows, _ in w.files)
                                + sum(len(w.quarantined) for w in sink.result))
        files = [f for write in sink.result for f in write.files]
        compute_s = sum(write.compute_s for write in sink.result)
        model_s = sum(write.model_s for write in sink.result)
        unknown_size = sum(write.unknown_size for write in sink.result)
        failed = pd.concat([w.quarantined for w in sink.result] + [earlier_quarantine], ignore_index=True)
        scored = sum(rows for _, rows, _ in files)
        if scored + len(failed) - len(earlier_quarantine) != len(pending) or failed["image_index"].duplicated().any():
            raise ScoresError(f"row accounting failed: {scored} scored + {len(failed) - len(earlier_quarantine)} "
                              f"quarantined != {len(pending)} images to score; nothing was committed")
        quarantine_files = []
        if len(failed):
            table = quarantine_table(failed, run_id=run_id, batch_date=batch_date, model_id=model_id)
            uri = staging_uri(config.out, run_id, "quarantine", "part-0.parquet")
            quarantine_files.append((uri, table.num_rows, write_table_file(table, uri, endpoint_url=endpoint)))
        entries = publish(config.out, run_id, batch_date, files, SCORES_DIR, endpoint_url=endpoint)
        quarantine_entries = publish(config.out, run_id, batch_date, quarantine_files, QUARANTINE_DIR,
                                     endpoint_url=endpoint)
        quarantined = {str(k): int(v) for k, v in failed["reason"].value_counts().items()}
        elapsed = time.monotonic() - started
        lease.check()  # still ours: no other run can have read the old index and scored these too
        commit = write_commit(config.out, {
            "format_version": FORMAT_VERSION, "run_id": run_id, "batch_date": batch_date, "model_id": model_id,
            "model_name": payload.get("model_name"), "checkpoint": checkpoint_dir, "method": method,
            "split_hash": payload.get("split_hash"),  # the split the model was trained on
            "input": config.input, "input_kind": source.kind,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": entries, "quarantine_files": quarantine_entries,
            "counts": {"input": source.total_rows, "scored": scored, "skipped": skipped,
                       "quarantined": len(failed), "deferred": deferred, "no_boxes_unknown_size": unknown_size},
            "quarantined": quarantined, "heatmap": heatmap, "feature_attributions": features,
            "data_origin": origin, "ignored": len(source.ignored),
            "boxes": box_settings, "model_init": (payload.get("model_build_config") or {}).get("init"),
            "metadata_features": ((payload.get("model_build_config") or {}).get("metadata_features") or {}).get("features"),
            "elapsed_s": round(elapsed, 3), "compute_s": round(compute_s, 3), "model_s": round(model_s, 3),
        }, endpoint_url=endpoint)
    except BaseException:
        remove_staging(config.out, run_id, endpoint_url=endpoint)
        raise
    remove_staging(config.out, run_id, endpoint_url=endpoint)

    summary = ScoreSummary(
        out=config.out, input=config.input, run_id=run_id, batch_date=batch_date, model_id=model_id,
        model_name=str(payload.get("model_name")), method=method, input_rows=source.total_rows, scored=scored,
        skipped=skipped, quarantined=quarantined, deferred=deferred, files=len(entries),
        bytes=sum(e["bytes"] for e in entries), elapsed_s=time.monotonic() - started, compute_s=compute_s,
        model_s=model_s, unknown_size=unknown_size, actors=actor_plan.describe() if len(pending) else "0",
        commit=commit, ignored=len(source.ignored),
        metadata_sources=_sum_counts(write.metadata_sources for write in sink.result), ood_warning=origin["warning"],
    )
    return summary


def scorer_threads(config: ScoreConfig) -> int:
    """torch threads of each scoring actor: one per CPU it holds (bench/gpu.py measures with the same)."""
    return max(1, int(config.actor_cpus))


def _stream(run: _Run, pending: pd.DataFrame, gate, sink, filesystem, counter) -> None:
    """read/decode -> the autoscaling pool of model actors -> the staging datasink, memory bounded."""
    from ray.data import ActorPoolStrategy

    config, source, contract = run.config, run.source, run.payload["preprocessing"]
    dataset = _input_dataset(config, source, pending, run.model, contract, filesystem)
    # Prepared inputs travel at the size they were prepared at, raw PNGs are decoded to the contract's.
    stored_size = int(source.prepared["size"]) if source.kind == "prepared" else int(contract["size"])
    scorer_kwargs = dict(
        checkpoint_dir=run.checkpoint_dir, model_id=run.model_id, method=run.method,
        method_options=config.method_options, stored_size=stored_size, run_id=run.run_id,
        batch_date=run.batch_date, max_map_side=config.max_map_side, box_min_probability=gate.thresholds,
        box_threshold=config.box_threshold, max_boxes=config.max_boxes, box_grid=config.box_grid,
        endpoint_url=config.endpoint_url, threads=scorer_threads(config),
        fail_after_rows=config.fail_after_rows, progress=counter,
    )
    plan = run.actor_plan
    scored_rows = dataset.map_batches(
        Scorer, fn_constructor_kwargs=scorer_kwargs,
        compute=ActorPoolStrategy(min_size=plan.min_actors, max_size=plan.max_actors),
        batch_size=config.batch_size, batch_format="pyarrow", num_cpus=config.actor_cpus,
        num_gpus=plan.gpus or None,
    )
    bound_in_flight(scored_rows, in_flight_bytes(config, contract, plan.max_actors, stored_size=stored_size))
    scored_rows.write_datasink(sink)


MIN_IN_FLIGHT_BYTES = 64 * 2**20
IN_FLIGHT_BATCHES_PER_ACTOR = 16


def in_flight_bytes(config: ScoreConfig, contract: dict, actors: int, *, stored_size: int | None = None) -> int:
    """How much decoded input and output the run may hold in the object store at once. Without a bound,
    decode tasks run ahead of slower model actors until the object store is full, so memory grows with
    the number of images; a few batches per actor keep the actors fed. Images are counted at
    `stored_size`, the side they travel at (default: the contract's size)."""
    if config.in_flight_mb is not None:
        return config.in_flight_mb * 2**20
    image_bytes = int(stored_size or contract["size"]) ** 2 * int(contract.get("channels", 1))
    return max(MIN_IN_FLIGHT_BYTES, IN_FLIGHT_BATCHES_PER_ACTOR * actors * config.batch_size * image_bytes)


def bound_in_flight(dataset, object_store_bytes: int) -> None:
    """Limits the object-store memory the dataset's execution uses (Ray Data backpressures on it)."""
    options = dataset.context.execution_options
    options.resource_limits = options.resource_limits.copy(object_store_memory=object_store_bytes)


def _prepared_quarantine(source: ScoringInput, done: set[str]) -> pd.DataFrame:
    """Rows a prepared input had quarantined (and no committed run scored since): quarantined again."""
    columns = ["image_index", "path", "stage", "reason"]
    if source.prepared_quarantine is None:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    frame = source.prepared_quarantine
    return frame.loc[~frame["image_index"].isin(done), columns].reset_index(drop=True)


def _sum_counts(counts) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for key, value in count.items():
            total[key] = total.get(key, 0) + value
    return total


def _row_columns(model) -> list[str]:
    columns = ["image_index", "path", "metadata_source"]
    if model.spec.uses_metadata:
        columns += [c for c in model.metadata_features.columns if c not in columns]
    return columns


def _input_dataset(config: ScoreConfig, source: ScoringInput, pending: pd.DataFrame, model, contract: dict,
                   filesystem):
    """Ray dataset of the rows to score, with decoded images for image models (streaming)."""
    import ray

    columns = _row_columns(model)
    image_config = ImageConfig(size=int(contract["size"]), batch_size=config.batch_size,
                               read_attempts=config.read_attempts, endpoint_url=config.endpoint_url)
    if not model.spec.uses_images:
        rows = pending[columns].reset_index(drop=True)
        if (rows["metadata_source"] == "csv").all():
            return manifest_dataset(rows, rows_per_block=config.batch_size * 8)
        # Files without a metadata row are read: their format checked, DICOM tags taken as metadata.
        return load_images(rows, image_config, filesystem=filesystem, num_cpus=config.decode_cpus, images=False)
    if source.kind == "prepared":
        from thorax_ray.data.shards import read_prepared

        wanted = ray.put(frozenset(pending["image_index"]))
        stored = [c for c in columns if c != "metadata_source"]  # added by prepared_batch
        dataset = read_prepared(source.uri, columns=[*stored, "image"], endpoint_url=config.endpoint_url)
        return dataset.map_batches(prepared_batch, fn_args=(wanted, config.endpoint_url),
                                   batch_format="pyarrow", batch_size=config.batch_size * 4)
    return load_images(pending[columns].reset_index(drop=True), image_config, filesystem=filesystem,
                       num_cpus=config.decode_cpus, sizes=True)
