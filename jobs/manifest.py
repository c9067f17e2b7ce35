"""Validate a ChestX-ray14 dataset (local folder or s3:// prefix) and write its manifest.

    python jobs/manifest.py --data data/synthetic --out data/synthetic/manifest.parquet

Lists storage once; every later job reads the manifest instead of listing 112k objects again. The
patient split must give the training and validation splits at least one patient each.
"""
from __future__ import annotations

import argparse

from thorax_ray.cli import add_s3_endpoint_argument, job_parser, run_main, setup_logging
from thorax_ray.data.manifest import build_manifest, write_manifest
from thorax_ray.data.splits import TRAINING_SPLITS, SplitConfig


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = job_parser(__doc__)
    parser.add_argument("--data", required=True, help="dataset folder or s3:// prefix")
    parser.add_argument("--out", required=True, help="manifest Parquet file (local path or s3:// URI)")
    parser.add_argument("--metadata", metavar="FILE",
                        help="metadata CSV (default: Data_Entry_2017*.csv, sample_labels.csv or sample.csv within "
                             "two levels of --data)")
    parser.add_argument("--val-fraction", type=float, default=SplitConfig.val_fraction,
                        help="share of patients for validation (training needs at least one)")
    parser.add_argument("--test-fraction", type=float, default=SplitConfig.test_fraction,
                        help="share of patients for test when the dataset has no test_list.txt")
    parser.add_argument("--split-seed", type=int, default=SplitConfig.seed, help="seed of the patient split")
    add_s3_endpoint_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    split = SplitConfig(val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.split_seed,
                        required=TRAINING_SPLITS)
    frame, summary = build_manifest(args.data, split, metadata_csv=args.metadata, endpoint_url=args.s3_endpoint)
    write_manifest(frame, args.out, summary, endpoint_url=args.s3_endpoint)
    print(summary.format())
    print(f"\nmanifest: {args.out} ({len(frame)} rows)")
    return 0


if __name__ == "__main__":
    run_main(main)
