"""Evaluate a trained model.

    python jobs/evaluate.py --checkpoint runs/thorax-small_cnn --data data/demo --split test --out out/eval

`--checkpoint` is a run folder STORAGE/NAME (its best checkpoint) or one checkpoint folder. Writes
OUT/metrics.json with per-class and mean AUROC over every row of the split exactly once.
"""
from __future__ import annotations

import argparse
import json
import os

from thorax_ray.cli import run_main, setup_logging
from thorax_ray.ray_setup import init_ray


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="run folder (best checkpoint) or checkpoint folder")
    parser.add_argument("--data", required=True, help="dataset folder/prefix or prepared output")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--out", required=True, help="output folder for metrics.json")
    parser.add_argument("--s3-endpoint", help="endpoint of an S3-compatible store (default: AWS_ENDPOINT_URL)")
    parser.add_argument("--address", help="Ray address")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    init_ray(args.address)
    from thorax_ray.predict import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.data, args.split, s3_endpoint=args.s3_endpoint)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "metrics.json")
    with open(path, "w") as handle:
        json.dump(metrics, handle, indent=2)
    print(f"{metrics['model']} on {args.split} ({metrics['n_images']} images): mean AUROC "
          f"{metrics['mean_auroc'] if metrics['mean_auroc'] is None else round(metrics['mean_auroc'], 4)}")
    for finding, value in metrics["auroc"].items():
        print(f"  {finding:<20} {'n/a' if value is None else f'{value:.4f}'}")
    print(f"metrics: {path}")
    return 0


if __name__ == "__main__":
    run_main(main)
