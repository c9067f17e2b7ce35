"""Batch scoring: probabilities, heatmaps of all 14 findings and boxes for every image not yet scored by
this checkpoint, on Ray Data (read/decode + a pool of model actors, one per GPU when there are GPUs).
Incremental and idempotent: run it on a schedule; each image is scored once per model_id.

    python jobs/score.py --checkpoint runs/cnn --input s3://bucket/incoming/ --out s3://bucket/scores
    python jobs/score.py --checkpoint runs/cnn/epoch_0007 --input data/demo --out data/scores \\
        --overlays data/overlays --limit 8
"""
from __future__ import annotations

import argparse

from thorax_ray.cli import add_cluster_arguments, run_main, setup_logging
from thorax_ray.ray_setup import init_ray
from thorax_ray.attribution import DEFAULT_MAX_BOXES, DEFAULT_THRESHOLD, list_methods
from thorax_ray.scoring import NO_METHOD, ScoreConfig, score
from thorax_ray.scoring.gate import CALIBRATED, parse_gate
from thorax_ray.scoring.scorer import DEFAULT_BOX_GRID, DEFAULT_MAX_MAP_SIDE


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder, or a training run folder (its best)")
    parser.add_argument("--input", required=True,
                        help="folder or s3:// prefix of PNGs (NIH layout, or new images without a CSV), "
                             "a manifest .parquet, or a prepared output")
    parser.add_argument("--out", required=True, help="output folder or s3:// prefix (shared by all runs)")
    parser.add_argument("--method", choices=[*list_methods(), NO_METHOD],
                        help="attribution method (default: cam, the raw class activation map of Wang et al. 2017, "
                             "for image models; fast_cam = its ReLU'd Grad-CAM form; metadata_ig for the MLP; "
                             "none: probabilities only)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model call (default 32)")
    parser.add_argument("--actors", type=int, help="model actors (default: one per GPU, else 1)")
    parser.add_argument("--actor-cpus", type=float, default=1.0, help="CPUs per actor (torch threads on CPU)")
    parser.add_argument("--box-min-probability", type=parse_gate, default=CALIBRATED,
                        help="which findings get boxes: 'calibrated' (default: each finding's operating point, "
                             "chosen on validation when the checkpoint was trained), a probability for every "
                             "finding, or 'none' (or a negative number): every boxed finding")
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
    parser.add_argument("--overlay-threshold", type=parse_gate, default=CALIBRATED,
                        help="which predicted findings an overlay shows (same values as --box-min-probability)")
    parser.add_argument("--keep-uncommitted-hours", type=float, default=24.0,
                        help="delete files of runs that never committed once older than this (default 24)")
    add_cluster_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    init_ray(args.address)
    config = ScoreConfig(
        checkpoint=args.checkpoint, input=args.input, out=args.out, method=args.method,
        batch_size=args.batch_size, actors=args.actors, actor_cpus=args.actor_cpus,
        box_min_probability=args.box_min_probability,
        box_threshold=args.box_threshold, max_boxes=args.max_boxes, box_grid=args.box_grid or None,
        max_map_side=args.max_map_side or None,
        max_images=args.max_images, in_flight_mb=args.in_flight_mb, batch_date=args.batch_date, overlays=args.overlays, overlay_limit=args.limit,
        overlay_threshold=args.overlay_threshold, keep_uncommitted_hours=args.keep_uncommitted_hours,
        endpoint_url=args.s3_endpoint,
    )
    print(score(config).format())
    return 0


if __name__ == "__main__":
    run_main(main)
