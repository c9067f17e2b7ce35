"""Prepare a dataset for fast epochs: one streaming Ray Data pass writes resized uint8 images with
labels, metadata and split to Parquet shards, plus a quarantine table of images that cannot be read.

    python jobs/prepare.py --data data/demo --out data/demo-prepared --size 224
"""
from __future__ import annotations

import argparse

from thorax_ray.cli import (add_cluster_arguments, add_placement_arguments, add_split_arguments, job_parser,
                            positive_int, run_main, setup_logging, show_config_defaults)
from thorax_ray.cluster import cluster_capacity
from thorax_ray.config_io import config_from_flags
from thorax_ray.data.prepare import PrepareConfig, prepare
from thorax_ray.data.splits import SPLIT_KINDS, TRAINING_SPLITS
from thorax_ray.preflight import require_inputs
from thorax_ray.ray_setup import init_ray

FLAGS = {  # flag -> PrepareConfig field; every flag's default is the field's
    "data": "data", "out": "out", "metadata": "metadata", "size": "image.size", "overwrite": "overwrite",
    "read_attempts": "image.read_attempts", "expected_source_size": "image.expected_source_size",
    "target_file_mb": "target_file_mb", "val_fraction": "split.val_fraction", "test_fraction": "split.test_fraction",
    "seed": "seed", "keep_previous_hours": "keep_previous_hours", "s3_endpoint": "image.endpoint_url",
    "shared_fs": "shared_fs", "placement_timeout": "placement_timeout_s", "split": "split.kind", "split_seed": "split.seed",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = job_parser(__doc__)
    parser.add_argument("--data", required=True, help="dataset folder or s3:// prefix (any accepted layout)")
    parser.add_argument("--out", required=True, help="output folder or s3:// prefix")
    parser.add_argument("--metadata", metavar="FILE", help="metadata CSV (default: found by its usual names)")
    parser.add_argument("--size", type=int, help="side of the stored images in pixels")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="replace an existing prepared output atomically")
    parser.add_argument("--read-attempts", type=int, help="tries per image on transient storage errors "
                                                          "(default: the storage retry budget, THORAX_S3_ATTEMPTS or 5)")
    parser.add_argument("--expected-source-size", type=int,
                        help="quarantine images whose decoded size differs, e.g. 1024 (default: any size)")
    parser.add_argument("--target-file-mb", type=positive_int, help="approximate size of one shard file")
    add_split_arguments(parser, SPLIT_KINDS)
    parser.add_argument("--seed", type=int, help="seed of the shards' random row order")
    parser.add_argument("--keep-previous-hours", type=float,
                        help="with --overwrite: hours the replaced version stays readable")
    add_cluster_arguments(parser)
    add_placement_arguments(parser)
    show_config_defaults(parser, FLAGS, PrepareConfig)
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> PrepareConfig:
    """The typed configs check sizes and fractions before Ray starts."""
    return config_from_flags(PrepareConfig, args, FLAGS, fixed={"split": {"required": TRAINING_SPLITS}})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    config = build_config(args)
    require_inputs({"--data": args.data}, endpoint_url=args.s3_endpoint)
    local = init_ray(args.address, verbose=args.verbose)
    print(prepare(config, capacity=cluster_capacity(args.cluster_config, local=local)).format())
    return 0


if __name__ == "__main__":
    run_main(main)
