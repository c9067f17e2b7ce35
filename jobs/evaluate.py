"""Evaluate trained models.

    # scored models side by side (outputs of jobs/score.py), with CIs, thresholds, localization, report.html
    python jobs/evaluate.py --scores cnn=out/scores/cnn --scores mlp=out/scores/mlp --data data/demo --out out/eval

    # one checkpoint on one split: per-class and mean AUROC
    python jobs/evaluate.py --checkpoint runs/thorax-small_cnn --data data/demo --split test --out out/eval

`--checkpoint` is a run folder STORAGE/NAME (its best checkpoint) or one checkpoint folder; `--scores`
is NAME=URI (or URI, named after its last path part). `--data` gives labels, splits and boxes (a
dataset folder/prefix or a prepared output). Writes OUT/metrics.json (and, with --scores, thresholds,
predictions.parquet, plots, overlays and report.html).
"""
from __future__ import annotations

import argparse
import json
import os

from thorax_ray.cli import add_cluster_arguments, run_main, setup_logging
from thorax_ray.ray_setup import init_ray


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="run folder (best checkpoint) or checkpoint folder")
    source.add_argument("--scores", action="append", metavar="NAME=URI", help="scores of one model (repeatable)")
    parser.add_argument("--data", required=True, help="dataset folder/prefix or prepared output")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--bootstrap", type=int, default=1000, help="patient-bootstrap resamples for the CIs")
    parser.add_argument("--threshold-rule", default="youden", choices=["youden", "f1"],
                        help="how thresholds are chosen on the validation split")
    parser.add_argument("--dataset-kind", default="synthetic", choices=["synthetic", "real"],
                        help="said in every column label so synthetic numbers are never taken for real ones")
    add_cluster_arguments(parser)
    return parser.parse_args(argv)


def named_scores(values: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        name, _, uri = value.partition("=") if "=" in value.split("://", 1)[0] else ("", "", value)
        pairs.append((name or uri.rstrip("/").rsplit("/", 1)[-1], uri))
    if len({name for name, _ in pairs}) != len(pairs):
        raise ValueError(f"--scores names must be distinct: {[name for name, _ in pairs]}")
    return tuple(pairs)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    if args.scores:  # reads Parquet and computes on this process: no Ray needed
        from thorax_ray.evaluation.run import EvaluationConfig, evaluate_scores
        from thorax_ray.scoring import read_scores

        config = EvaluationConfig(scores=named_scores(args.scores), data=args.data, out=args.out, split=args.split,
                                  n_boot=args.bootstrap, threshold_rule=args.threshold_rule,
                                  dataset_kind=args.dataset_kind, s3_endpoint=args.s3_endpoint)
        metrics = evaluate_scores(config, lambda uri: read_scores(uri, endpoint_url=args.s3_endpoint))
        print(metrics["table"])
        print(f"metrics: {os.path.join(args.out, 'metrics.json')}\nreport: {os.path.abspath(metrics['report'])}")
        return 0

    from thorax_ray.predict import evaluate_checkpoint

    init_ray(args.address)
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
