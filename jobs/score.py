"""Batch scoring: probabilities, heatmaps of all 14 findings and boxes for every image not yet scored by
this checkpoint, on Ray Data (read/decode + a pool of model actors, one per GPU when there are GPUs).
Incremental and idempotent: run it on a schedule; each image is scored once per model_id. A run holds a
lease on --out (OUT/_lock.json), so an overlapping run from any machine waits (--wait-for-lock) or exits
with code 75 and one line naming the run that holds it.

    python jobs/score.py --checkpoint runs/cnn --input s3://bucket/incoming/ --out s3://bucket/scores
    python jobs/score.py --checkpoint runs/cnn/epoch_0007 --input data/demo --out data/scores \\
        --overlays data/overlays --limit 8
    # probabilities averaged over CheXNet's ten crops; raw CAM maps at feature-map size, stored lossless
    python jobs/score.py --checkpoint runs/cnn --input data/demo --out data/scores-tta --tta tencrop \\
        --method cam --max-map-side 0 --heatmap-bits 8
"""
from __future__ import annotations

import argparse
import datetime
import re

from thorax_ray import exit_codes
from thorax_ray.attribution import PLANAR_BITS, list_methods
from thorax_ray.checkpoint import resolve_checkpoint
from thorax_ray.cli import (add_cluster_arguments, add_gpu_arguments, checked_by, job_parser, non_negative_float,
                            non_negative_int, positive_float, positive_int, run_main, setup_logging,
                            show_config_defaults, zero_means_none)
from thorax_ray.cluster import cluster_capacity
from thorax_ray.config_io import Flag, config_from_flags
from thorax_ray.models.tta import TTA_KINDS, check_checkpoint_tta
from thorax_ray.preflight import require_inputs
from thorax_ray.ray_setup import init_ray
from thorax_ray.scoring import NO_METHOD, ScoreConfig
from thorax_ray.scoring.gate import parse_gate
from thorax_ray.scoring.score import score
from thorax_ray.scoring.summary import ScoreSummary

FLAGS = {  # flag -> ScoreConfig field, or Flag(field, converter); every flag's default is the field's
    "checkpoint": "checkpoint", "input": "input", "out": "out", "metadata": "metadata", "method": "method",
    "batch_size": "batch_size", "min_actors": "min_actors", "max_actors": "max_actors",
    "gpus_per_actor": "gpus_per_actor", "actor_cpus": "actor_cpus",
    "box_min_probability": Flag("box_min_probability", parse_gate), "box_threshold": "box_threshold",
    "max_boxes": "max_boxes", "box_grid": Flag("box_grid", zero_means_none),
    "max_map_side": Flag("max_map_side", zero_means_none), "max_images": "max_images",
    "in_flight_mb": "in_flight_mb", "batch_date": "batch_date", "overlays": "overlays", "limit": "overlay_limit",
    "overlay_threshold": Flag("overlay_threshold", parse_gate), "wait_for_lock": "lock_wait_s",
    "keep_uncommitted_hours": "keep_uncommitted_hours", "s3_endpoint": "endpoint_url", "use_gpu": "use_gpu",
    "cluster_config": "cluster_config", "shared_fs": "shared_fs", "placement_timeout": "placement_timeout_s", "heatmap_bits": "heatmap_bits", "tta": "tta",
    "tta_heatmaps": "tta_heatmaps", "fail_on_drift": "fail_on_drift",
}


def iso_date(text: str) -> str:
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}")
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = job_parser(__doc__)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder, or a training run folder (its best)")
    parser.add_argument("--input", required=True,
                        help="folder or s3:// prefix of PNGs (NIH layout, or new images without a CSV), "
                             "a manifest .parquet, or a prepared output")
    parser.add_argument("--out", required=True, help="output folder or s3:// prefix (shared by all runs)")
    parser.add_argument("--metadata", metavar="FILE",
                        help="metadata CSV of a folder input (default: found by its usual names)")
    parser.add_argument("--method", choices=[*list_methods(), NO_METHOD],
                        help="attribution method (default: fast_cam, all-class Grad-CAM maps from one forward pass, "
                             "for image models; cam = the raw class activation maps of Wang et al. 2017; "
                             "metadata_ig for the MLP; none: probabilities only)")
    parser.add_argument("--batch-size", type=positive_int, help="images per model call")
    parser.add_argument("--min-actors", type=positive_int, help="model actors kept running")
    parser.add_argument("--max-actors", type=positive_int,
                        help="model actors the pool may grow to while work is queued (default: on GPUs, the GPUs the "
                             "cluster has or can launch / --gpus-per-actor; on CPUs 1)")
    parser.add_argument("--gpus-per-actor", type=positive_float, help="GPUs per model actor on GPUs")
    parser.add_argument("--actor-cpus", type=positive_float, help="CPUs per actor (torch threads on CPU)")
    parser.add_argument("--box-min-probability", type=checked_by(parse_gate),
                        help="which findings get boxes: 'calibrated' (each finding's operating point, chosen on "
                             "validation when the checkpoint was trained), a probability for every finding, or "
                             "'none' (or a negative number): every boxed finding")
    parser.add_argument("--box-threshold", type=non_negative_float, help="map level (0..255) of a box")
    parser.add_argument("--max-boxes", type=positive_int, help="boxes per finding")
    parser.add_argument("--box-grid", type=non_negative_int,
                        help="trace boxes on a grid of at most this many pixels per side, then scale to the "
                             "original (0: at full size)")
    parser.add_argument("--max-map-side", type=non_negative_int,
                        help="pool maps to at most this many cells per side (0: keep)")
    parser.add_argument("--heatmap-bits", type=int, choices=list(PLANAR_BITS),
                        help="bits per stored map value: 5 = 32 levels; 8 = all 256, lossless (Wang et al.'s box "
                             "thresholds 60 and 180 hold exactly on the stored maps)")
    parser.add_argument("--tta", choices=list(TTA_KINDS),
                        help="test-time augmentation of the probabilities: hflip = mean with the horizontal flip's; "
                             "tencrop = CheXNet's ten crops (resize to 256/224 of the model's size, four corners "
                             "and centre, and of the flip); maps and boxes stay from the un-augmented image; "
                             "recorded with the scores")
    parser.add_argument("--tta-heatmaps", action="store_true", default=None,
                        help="with --tta hflip: maps are the mean of the image's and the flipped image's (flipped "
                             "back) (default: off)")
    parser.add_argument("--max-images", type=positive_int,
                        help="score at most this many new images in this run (default: all)")
    parser.add_argument("--in-flight-mb", type=positive_int,
                        help="object-store MB the run may hold at once (default: 16 batches per actor, >= 64)")
    parser.add_argument("--batch-date", type=iso_date, help="partition date YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--overlays", help="folder for overlay PNGs of --limit scored images (default: none)")
    parser.add_argument("--limit", type=non_negative_int, help="overlay PNGs to write")
    parser.add_argument("--overlay-threshold", type=checked_by(parse_gate),
                        help="which predicted findings an overlay shows (same values as --box-min-probability)")
    parser.add_argument("--wait-for-lock", type=non_negative_float,
                        help="seconds to wait when another run is writing to --out (0: exit at once, code 75)")
    parser.add_argument("--keep-uncommitted-hours", type=non_negative_float,
                        help="delete files of runs that never committed once older than this")
    parser.add_argument("--fail-on-drift", action="store_true", default=None,
                        help=f"exit {exit_codes.DRIFTED} when a finding drifted from the checkpoint's validation "
                             "distribution or the out-of-distribution alarm rose (the run's scores are committed "
                             "either way; without it drift is a warning and the exit code 0) (default: off)")
    add_cluster_arguments(parser)
    add_gpu_arguments(parser, "model actors with --gpus-per-actor GPUs")
    show_config_defaults(parser, FLAGS, ScoreConfig)
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> ScoreConfig:
    return config_from_flags(ScoreConfig, args, FLAGS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    config = build_config(args)
    require_inputs({"--checkpoint": config.checkpoint, "--input": config.input}, endpoint_url=config.endpoint_url)
    checkpoint_dir = resolve_checkpoint(config.checkpoint, endpoint_url=config.endpoint_url)  # none there: fail now
    check_checkpoint_tta(checkpoint_dir, config.tta, endpoint_url=config.endpoint_url)  # before Ray starts
    local = init_ray(args.address, verbose=args.verbose, extra_cpus=0)
    summary = score(config, capacity=cluster_capacity(config.cluster_config, local=local))  # busy --out: run_main
    print(summary.format())
    return exit_code(config, summary)


def exit_code(config: ScoreConfig, summary: ScoreSummary) -> int:
    """0, or exit_codes.DRIFTED when the run drifted and `config.fail_on_drift` asks to fail on it."""
    return exit_codes.DRIFTED if config.fail_on_drift and summary.drifted else exit_codes.DONE


if __name__ == "__main__":
    run_main(main, on_busy="run again later or pass --wait-for-lock SECONDS")
