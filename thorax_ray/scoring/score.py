"""One scoring run: resolve the input, skip what this model already scored, stream the rest through
read/decode and a pool of model actors (`ActorPoolStrategy`) into Parquet files in the run's folder of the
scores table, then commit them in one Delta transaction (thorax_ray.scoring.output). Decoding runs as CPU tasks; when the actors hold only CPUs, Ray Data fuses it into them.

    summary = score(ScoreConfig(checkpoint="runs/cnn", input="s3://bucket/incoming/", out="s3://bucket/scores"))
    print(summary.format())

Every input row (every file of a folder input, see thorax_ray.data.inputs) ends in exactly one of:
scored (a row in the scores), skipped (already scored by the same model_id in a committed run),
quarantined (could not be read/decoded, with its reason), or deferred (left for the next run by
`max_images`); hidden files are ignored and counted. A model trained on synthetic data that scores
real-world images gets a warning, printed and recorded in the scores' metadata (thorax_ray.data.origin).
A run that fails or is killed commits nothing; the next run scores its images again, so every image
appears once per model_id.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import pandas as pd

from thorax_ray import console
from thorax_ray.attribution import default_method_name, get_method
from thorax_ray.calibration import describe_calibration
from thorax_ray.checkpoint import load_payload_and_id, resolve_checkpoint
from thorax_ray.cluster import ClusterCapacity, check_shared_storage, cluster_capacity
from thorax_ray.data.inputs import InputSource, resolve_input
from thorax_ray.data.origin import ood_check
from thorax_ray.data.preprocess import PreprocessingContract
from thorax_ray.data.staged import StagedRun, new_run_id, staged_run, utc_timestamp
from thorax_ray.labels import FINDING_COLUMNS, FINDINGS
from thorax_ray.models import build_model
from thorax_ray.models.tta import NO_TTA, check_tta, describe_tta
from thorax_ray.monitoring.run import MONITORED_COLUMNS, monitor_committed_run
from thorax_ray.progress import StageProgress
from thorax_ray.scoring.config import ScoreConfig
from thorax_ray.scoring.gate import resolve_gate
from thorax_ray.scoring.output import (CALIBRATED_COLUMNS, SCORES_DIR, SCORES_FORMAT_VERSION, ScoresError,
                                       check_writable, clean_uncommitted, commit_quarantine, commit_scores,
                                       feature_attribution_metadata, quarantine_table, read_scores, run_folder,
                                       schema_metadata, score_schema, scored_index)
from thorax_ray.scoring.overlays import write_overlays
from thorax_ray.scoring.pipeline import ScoringRun, plan_actors, stream
from thorax_ray.scoring.scorer import NO_METHOD, heatmap_description, uses_feature_attributions, uses_maps
from thorax_ray.scoring.summary import ScoreSummary

log = logging.getLogger(__name__)


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
    check_tta(config.tta, model.spec)  # a metadata-only model has no image to augment: refused before any actor
    method = config.method or default_method_name(model)
    if method != NO_METHOD:
        get_method(method)(model, **config.method_options)  # fails early on a method the model cannot use
    source = resolve_input(config.input, metadata_csv=config.metadata, endpoint_url=endpoint)
    log.info("scoring %s with %s (model_id %s, method %s, tta %s) into %s, run %s",
             source.describe(), payload.model_name, model_id, method, config.tta, config.out, run_id)
    origin = ood_check(payload.data_origin, source.data_origin)
    if origin["warning"]:
        log.warning("%s: %s", config.input, origin["warning"])

    console.say("score", actor_plan.placement.describe())
    run = ScoringRun(config=config, source=source, payload=payload, model=model, model_id=model_id,
               checkpoint_dir=checkpoint_dir, method=method, actor_plan=actor_plan, run_id=run_id,
               batch_date=batch_date, started=started, now=now, origin=origin)
    check_writable(config.out, endpoint_url=endpoint)
    stage = run_folder(config.out, SCORES_DIR, batch_date, run_id)  # removed unless the run commits
    with staged_run(config.out, stage, ttl_s=config.lock_ttl_s, wait_s=config.lock_wait_s,
                    about={"run_id": run_id, "model_id": model_id}, endpoint_url=endpoint) as staged:
        summary = _score_locked(run, staged, filesystem)
    # after the commit: the run's committed rows against the checkpoint's validation reference (OUT/monitoring/)
    summary.monitoring = monitor_committed_run(
        config.out, read_scores(config.out, run_id=run_id, columns=MONITORED_COLUMNS, endpoint_url=endpoint),
        run_id=run_id, batch_date=batch_date, model_id=model_id, model_name=str(payload.model_name),
        reference=payload.validation_reference, endpoint_url=endpoint)
    if config.overlays:
        shown = resolve_gate(config.overlay_threshold, payload.operating_points, epoch=payload.epoch,
                             calibration=payload.calibration)
        summary.overlays = write_overlays(config.out, source, config.overlays, model_id=model_id, run_id=run_id,
                                          limit=config.overlay_limit, threshold=shown.thresholds,
                                          endpoint_url=endpoint)
    return summary


@dataclass(frozen=True)
class _Pending:
    """What this run scores: the input rows not yet scored by this model_id (at most max_images)."""

    rows: pd.DataFrame
    skipped: int  # already scored by this model_id (and rows a prepared input quarantined in such runs)
    deferred: int  # over max_images: left for a later run
    earlier_quarantine: pd.DataFrame  # rows a prepared input quarantined, not yet reported for this model_id


@dataclass(frozen=True)
class _Layout:
    """What the run writes: the schema and its metadata, the maps, attributions and box settings."""

    schema: object  # pa.Schema
    metadata: dict[str, str]
    heatmap: dict | None
    features: dict | None
    box_settings: dict | None
    gate: object  # thorax_ray.scoring.gate.Gate
    tta: dict  # the test-time augmentation of the probabilities and what the maps come from


@dataclass(frozen=True)
class _Written:
    """What the write tasks handed back."""

    files: list
    failed: pd.DataFrame  # quarantined rows, those of `_Pending.earlier_quarantine` included
    scored: int
    compute_s: float
    model_s: float
    unknown_size: int
    metadata_sources: dict[str, int]


def _score_locked(run: ScoringRun, staged: StagedRun, filesystem) -> ScoreSummary:
    """The part of a run that needs the output's lease: what is already scored, the scoring, the commit
    (`staged` removes the run's folder of the scores table on any failure before the commit)."""
    config, endpoint = run.config, run.config.endpoint_url
    if config.keep_uncommitted_hours is not None:
        clean_uncommitted(config.out, older_than_s=config.keep_uncommitted_hours * 3600, endpoint_url=endpoint)
    pending = _plan_pending(run)
    layout = _describe_output(run)
    written = _score_pending(run, pending, layout, filesystem)
    commit, entries, quarantined = _commit(run, staged, pending, layout, written)
    return ScoreSummary(
        out=config.out, input=config.input, run_id=run.run_id, batch_date=run.batch_date, model_id=run.model_id,
        model_name=str(run.payload.model_name), method=run.method, input_rows=run.source.total_rows,
        scored=written.scored, skipped=pending.skipped, quarantined=quarantined, deferred=pending.deferred,
        files=len(entries), bytes=sum(e["bytes"] for e in entries), elapsed_s=time.monotonic() - run.started,
        compute_s=written.compute_s, model_s=written.model_s, unknown_size=written.unknown_size,
        actors=run.actor_plan.describe() if len(pending.rows) else "0", commit=commit,
        ignored=len(run.source.ignored), metadata_sources=written.metadata_sources,
        ood_warning=run.origin["warning"], tta=run.config.tta,
    )


def _plan_pending(run: ScoringRun) -> _Pending:
    """The input rows this model_id has not scored in a committed run, at most max_images of them."""
    config, source = run.config, run.source
    done = scored_index(config.out, run.model_id, endpoint_url=config.endpoint_url)
    is_done = source.rows["image_index"].isin(done)
    rows = source.rows.loc[~is_done]
    deferred = 0
    if config.max_images is not None and len(rows) > config.max_images:
        deferred = len(rows) - config.max_images
        rows = rows.head(config.max_images)
    skipped = int(is_done.sum())
    earlier_quarantine = _prepared_quarantine(source, done)
    skipped += 0 if source.prepared_quarantine is None else len(source.prepared_quarantine) - len(earlier_quarantine)
    return _Pending(rows=rows, skipped=skipped, deferred=deferred, earlier_quarantine=earlier_quarantine)


def _describe_output(run: ScoringRun) -> _Layout:
    """The output's schema and the description its files carry (model, maps, boxes, origin)."""
    config, payload, model, method = run.config, run.payload, run.model, run.method
    contract = PreprocessingContract.from_dict(payload.preprocessing)
    maps = uses_maps(model, method)
    attributions = uses_feature_attributions(method)
    heatmap = (heatmap_description(model, contract, method, config.max_map_side, heatmap_bits=config.heatmap_bits,
                                   tta_heatmaps=config.tta_heatmaps) if maps else None)
    tta = tta_record(config, contract, maps=maps)
    features = (feature_attribution_metadata(model.metadata_features.names, method) if attributions else None)
    gate = resolve_gate(config.box_min_probability, payload.operating_points, epoch=payload.epoch,
                        calibration=payload.calibration)
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
        "format_version": SCORES_FORMAT_VERSION, "model_id": run.model_id, "model_name": payload.model_name,
        "checkpoint": run.checkpoint_dir, "method": method, "preprocessing": contract.to_dict(),
        "classes": list(FINDINGS), "probability_columns": list(FINDING_COLUMNS),
        "probabilities": ("sigmoid of the model's logits, float32" if config.tta == NO_TTA else
                          f"mean of the sigmoid probabilities of the {config.tta} views (tta), float32"),
        "tta": tta, "boxes": box_settings, "run_id": run.run_id,
        "calibrated_columns": list(CALIBRATED_COLUMNS), "calibration": describe_calibration(payload.calibration),
        "model_init": payload.model_build_config.get("init"),
        "batch_date": run.batch_date, "data_origin": run.origin,
    }
    return _Layout(schema=score_schema(maps=maps, feature_attributions=attributions),
                   metadata=schema_metadata(scores=description, heatmap=heatmap, features=features),
                   heatmap=heatmap, features=features, box_settings=box_settings, gate=gate, tta=tta)


def tta_record(config: ScoreConfig, contract: PreprocessingContract, *, maps: bool) -> dict:
    """How the probabilities were augmented (thorax_ray.models.tta.describe_tta) and what the maps come from;
    recorded in the score files' metadata and the run's commit record (`read_scores(...).attrs["tta"]`)."""
    record = describe_tta(config.tta, contract.size)
    if not maps:
        record["heatmaps"] = "none written"
    elif config.tta_heatmaps:
        record["heatmaps"] = ("mean of the un-augmented image's maps and the horizontally flipped image's maps, "
                              "flipped back")
    else:
        record["heatmaps"] = "the un-augmented image (the attribution method's own pass)"
    return record


def _score_pending(run: ScoringRun, pending: _Pending, layout: _Layout, filesystem) -> _Written:
    """Streams the pending rows through the actor pool into the run's folder of the scores table; checks every
    row is accounted for."""
    from thorax_ray.scoring.sink import ScoresDatasink  # deferred: Ray (absent on the GPU machine)

    config = run.config
    sink = ScoresDatasink(config.out, run.run_id, run.batch_date, layout.schema, layout.metadata,
                          rows_per_file=config.rows_per_file, compression=config.compression,
                          endpoint_url=config.endpoint_url)
    if len(pending.rows):
        with StageProgress("score", total=len(pending.rows)) as progress:
            stream(run, pending.rows, layout.gate, sink, filesystem, progress.counter)
            progress.finish(sum(rows for w in sink.result for _, rows, _ in w.files)
                            + sum(len(w.quarantined) for w in sink.result))
    files = [f for write in sink.result for f in write.files]
    failed = pd.concat([w.quarantined for w in sink.result] + [pending.earlier_quarantine], ignore_index=True)
    scored = sum(rows for _, rows, _ in files)
    newly_failed = len(failed) - len(pending.earlier_quarantine)
    if scored + newly_failed != len(pending.rows) or failed["image_index"].duplicated().any():
        raise ScoresError(f"row accounting failed: {scored} scored + {newly_failed} "
                          f"quarantined != {len(pending.rows)} images to score; nothing was committed")
    return _Written(files=files, failed=failed, scored=scored,
                    compute_s=sum(write.compute_s for write in sink.result),
                    model_s=sum(write.model_s for write in sink.result),
                    unknown_size=sum(write.unknown_size for write in sink.result),
                    metadata_sources=_sum_counts(write.metadata_sources for write in sink.result))


def _commit(run: ScoringRun, staged: StagedRun, pending: _Pending, layout: _Layout,
            written: _Written) -> tuple[str, list[dict], dict[str, int]]:
    """Commits the run's score files to the scores table in one Delta commit holding the run's record (while
    the lease is still ours), then its quarantined rows to the quarantine table; returns (URI of the commit's
    log entry, committed score files, quarantined rows per reason)."""
    config, payload, endpoint = run.config, run.payload, run.config.endpoint_url
    run_id, batch_date, failed = run.run_id, run.batch_date, written.failed
    quarantined = {str(k): int(v) for k, v in failed["reason"].value_counts().items()}
    elapsed = time.monotonic() - run.started
    build = payload.model_build_config
    # Committed only while the lease is still ours: no other run can have read the old index and scored these too.
    staged.lease.fence()
    record = {
        "format_version": SCORES_FORMAT_VERSION, "run_id": run_id, "batch_date": batch_date, "model_id": run.model_id,
        "model_name": payload.model_name, "checkpoint": run.checkpoint_dir, "method": run.method,
        "split_hash": payload.split_hash,  # the split the model was trained on
        "input": config.input, "input_kind": run.source.kind,
        "started": utc_timestamp(run.now), "finished": utc_timestamp(),
        "counts": {"input": run.source.total_rows, "scored": written.scored, "skipped": pending.skipped,
                   "quarantined": len(failed), "deferred": pending.deferred,
                   "no_boxes_unknown_size": written.unknown_size},
        "quarantined": quarantined, "heatmap": layout.heatmap, "feature_attributions": layout.features,
        "data_origin": run.origin, "ignored": len(run.source.ignored),
        "boxes": layout.box_settings, "model_init": build.get("init"),
        "metadata_features": (build.get("metadata_features") or {}).get("features"),
        "calibration": describe_calibration(payload.calibration), "tta": layout.tta,
        "elapsed_s": round(elapsed, 3), "compute_s": round(written.compute_s, 3), "model_s": round(written.model_s, 3),
    }
    commit, entries = commit_scores(config.out, record, written.files, layout.schema, endpoint_url=endpoint)
    staged.committed = commit  # the run's folder is now the table's: kept
    if len(failed):
        commit_quarantine(config.out, quarantine_table(failed, run_id=run_id, batch_date=batch_date,
                                                       model_id=run.model_id),
                          run_id=run_id, batch_date=batch_date, model_id=run.model_id, endpoint_url=endpoint)
    return commit, entries, quarantined


def _prepared_quarantine(source: InputSource, done: set[str]) -> pd.DataFrame:
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


