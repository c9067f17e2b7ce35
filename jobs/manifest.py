"""Validate a ChestX-ray14 dataset (local folder or s3:// prefix) and write its manifest.

    python jobs/manifest.py --data data/synthetic --out data/synthetic/manifest.parquet

Lists storage once; every later job reads the manifest instead of listing 112k objects again. The
patient split must give the training and validation splits at least one patient each.
"""
from __future__ import annotations

import argparse

from thorax_ray.cli import (add_s3_endpoint_argument, add_split_arguments, job_parser, run_main, setup_logging,
                            show_config_defaults)
from thorax_ray.config_io import config_from_flags
from thorax_ray.data.manifest import build_manifest, write_manifest
from thorax_ray.data.splits import SPLIT_KINDS, TRAINING_SPLITS, SplitConfig

FLAGS = {"val_fraction": "val_fraction", "test_fraction": "test_fraction", "split_seed": "seed",  # -> SplitConfig
         "split": "kind"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = job_parser(__doc__)
    parser.add_argument("--data", required=True, help="dataset folder or s3:// prefix")
    parser.add_argument("--out", required=True, help="manifest Parquet file (local path or s3:// URI)")
    parser.add_argument("--metadata", metavar="FILE",
                        help="metadata CSV (default: Data_Entry_2017*.csv, sample_labels.csv or sample.csv within "
                             "two levels of --data)")
    add_split_arguments(parser, SPLIT_KINDS)
    add_s3_endpoint_argument(parser)
    show_config_defaults(parser, FLAGS, SplitConfig)
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> SplitConfig:
    return config_from_flags(SplitConfig, args, FLAGS, fixed={"required": TRAINING_SPLITS})


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    split = build_config(args)
    frame, summary = build_manifest(args.data, split, metadata_csv=args.metadata, endpoint_url=args.s3_endpoint)
    write_manifest(frame, args.out, summary, endpoint_url=args.s3_endpoint)
    print(summary.format())
    print(f"\nmanifest: {args.out} ({len(frame)} rows)")
    return 0


if __name__ == "__main__":
    run_main(main)
