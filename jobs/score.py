"""Batch scoring: probabilities, heatmaps of all 14 findings and boxes for every image not yet scored by
this checkpoint, on Ray Data (read/decode + a pool of model actors, one per GPU when there are GPUs).
Incremental and idempotent: run it on a schedule; each image is scored once per model_id. A run holds a
lease on --out (OUT/_lock.json), so an overlapping run from any machine waits (--wait-for-lock) or exits
with code 75 and one line naming the run that holds it.

    python jobs/score.py --checkpoint runs/cnn --input s3://bucket/incoming/ --out s3://bucket/scores
    python jobs/score.py --checkpoint runs/cnn/epoch_0007 --input data/demo --out data/scores \\
        --overlays data/overlays --limit 8
"""
from __future__ import annotations

import argparse
import sys

from thorax_ray.cli import add_cluster_arguments, add_gpu_arguments, run_main, setup_logging
from thorax_ray.cluster import cluster_capacity
from thorax_ray.lease import LeaseBusy
from thorax_ray.ray_setup import init_ray
from thorax_ray.attribution import DEFAULT_MAX_BOXES, DEFAULT_THRESHOLD, list_methods
from thorax_ray.scoring import NO_METHOD, ScoreConfig, score
from thorax_ray.scoring.scorer import DEFAULT_BOX_GRID, DEFAULT_MAX_MAP_SIDE


EXIT_BUSY = 75  # EX_TEMPFAIL: another run holds the output; try again later


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder, or a training run folder (its best)")
    parser.add_argument("--input", required=True,
                        help="folder or s3:// prefix of images: PNG, JPEG, DICOM (NIH layout, or new files with or "
                             "without a CSV; every file is scored or quarantined), a manifest .parquet, or a "
                             "prepared output")
    parser.add_argument("--metadata", metavar="FILE",
                        help="metadata CSV of a folder input (default: Data_Entry_2017*.csv, sample_labels.csv or "
                             "sample.csv within two levels); files without a row take DICOM tags")
    parser.add_argument("--out", required=True, help="output folder or s3:// prefix (shared by all runs)")
    parser.add_argument("--method", choices=[*list_methods(), NO_METHOD],
                        help="attribution method (default: fast_cam for image models, metadata_ig for the MLP; "
                             "none: probabilities only)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model call (default 32)")
    parser.add_argument("--min-actors", type=int, default=1, help="model actors kept running (default 1)")
    parser.add_argument("--max-actors", type=int,
                        help="model actors the pool may grow to while work is queued (default: on GPUs, the GPUs the "
                             "cluster has or can launch / --gpus-per-actor; on CPUs 1)")
    parser.add_argument("--gpus-per-actor", type=float, default=1.0, help="GPUs per model actor on GPUs (default 1)")
    parser.add_argument("--actor-cpus", type=float, default=1.0, help="CPUs per actor (torch threads on CPU)")
    parser.add_argument("--wait-for-lock", type=float, default=0.0,
                        help="seconds to wait when another run is writing to --out (default 0: exit at once, code 75)")
    parser.add_argument("--box-min-probability", type=float, default=0.5,
                        help="box only findings with at least this probability (default 0.5; negative: all)")
    parser.add_argument("--box-threshold", type=float, default=DEFAULT_THRESHOLD,
                        help=f"map level (0..255) of a box (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--max-boxes", type=int, default=DEFAULT_MAX_BOXES,
                        help=f"boxes per finding (default {DEFAULT_MAX_BOXES})")
    parser.add_argument("--box-grid", type=int, default=DEFAULT_BOX_GRID,
                        help="trace boxes on a grid of at most this many pixels per side, then scale to the "
                             f"original (default {DEFAULT_BOX_GRID}; 0: at full size)")
    parser.add_argument("--max-map-side", type=int, default=DEFAULT_MAX_MAP_SIDE,
                        help=f"pool maps to at most this many cells per side (default {DEFAULT_MAX_MAP_SIDE}; 0: keep)")
    parser.add_argument("--max-images", type=int, help="score at most this many new images in this run")
    parser.add_argument("--in-flight-mb", type=int,
                        help="object-store MB the run may hold at once (default: 16 batches per actor, >= 64)")
    parser.add_argument("--batch-date", help="partition date YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--overlays", help="folder for overlay PNGs of --limit scored images")
    parser.add_argument("--limit", type=int, default=8, help="overlay PNGs to write (default 8)")
    parser.add_argument("--overlay-threshold", type=float, default=0.5, help="probability that shows a finding")
    parser.add_argument("--keep-uncommitted-hours", type=float, default=24.0,
                        help="delete files of runs that never committed once older than this (default 24)")
    add_cluster_arguments(parser)
    add_gpu_arguments(parser, "model actors with --gpus-per-actor GPUs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    config = ScoreConfig(
        checkpoint=args.checkpoint, input=args.input, out=args.out, metadata=args.metadata, method=args.method,
        batch_size=args.batch_size, use_gpu=args.use_gpu or "auto", gpus_per_actor=args.gpus_per_actor,
        min_actors=args.min_actors, max_actors=args.max_actors, actor_cpus=args.actor_cpus,
        cluster_config=args.cluster_config, shared_fs=bool(args.shared_fs), lock_wait_s=args.wait_for_lock,
        box_min_probability=None if args.box_min_probability < 0 else args.box_min_probability,
        box_threshold=args.box_threshold, max_boxes=args.max_boxes, box_grid=args.box_grid or None,
        max_map_side=args.max_map_side or None,
        max_images=args.max_images, in_flight_mb=args.in_flight_mb, batch_date=args.batch_date, overlays=args.overlays, overlay_limit=args.limit,
        overlay_threshold=args.overlay_threshold, keep_uncommitted_hours=args.keep_uncommitted_hours,
        endpoint_url=args.s3_endpoint,
    )
    local = init_ray(args.address)
    try:
        summary = score(config, capacity=cluster_capacity(config.cluster_config, local=local))
    except LeaseBusy as busy:
        print(f"[score] not started: {busy}; run again later or pass --wait-for-lock SECONDS", file=sys.stderr)
        return EXIT_BUSY
    print(summary.format())
    return 0


if __name__ == "__main__":
    run_main(main)
