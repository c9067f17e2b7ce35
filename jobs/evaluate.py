"""Evaluate trained models.

    # scored models side by side (outputs of jobs/score.py), with CIs, thresholds, localization, report.html
    python jobs/evaluate.py --scores cnn=out/scores/cnn --scores mlp=out/scores/mlp --data data/demo --out out/eval

    # one checkpoint on one split: per-class and mean AUROC (--tta hflip|tencrop: test-time augmentation)
    python jobs/evaluate.py --checkpoint runs/thorax-small_cnn --data data/demo --split test --out out/eval

`--checkpoint` is a run folder STORAGE/NAME (its best checkpoint) or one checkpoint folder; `--scores`
is NAME=URI (split at the first `=`; NAME is a plain file name: it names the model's thresholds file)
or a URI alone, named after its last path part. `--data` gives labels, splits and boxes (a dataset
folder/prefix or a prepared output). Writes OUT/metrics.json (and, with --scores, thresholds,
predictions.parquet, plots, overlays and report.html). Every input is checked before anything is
written: a missing or empty --scores output is an error naming it.
"""
from __future__ import annotations

import argparse
import os

from thorax_ray import storage
from thorax_ray.cli import (add_cluster_arguments, field_default, job_parser, positive_int, run_main, setup_logging,
                            show_config_defaults)
from thorax_ray.config_io import Flag, config_from_flags
from thorax_ray.data.splits import SPLIT_KINDS
from thorax_ray.evaluation.evaluate import EvaluationConfig
from thorax_ray.models.tta import NO_TTA, TTA_KINDS, check_checkpoint_tta
from thorax_ray.preflight import require_inputs
from thorax_ray.ray_setup import init_ray


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = job_parser(__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="run folder (best checkpoint) or checkpoint folder")
    source.add_argument("--scores", action="append", metavar="NAME=URI", help="scores of one model (repeatable)")
    parser.add_argument("--data", required=True, help="dataset folder/prefix or prepared output")
    parser.add_argument("--split", choices=["train", "val", "test"],
                        help="the split evaluated")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--bootstrap", type=positive_int,
                        help="patient-bootstrap resamples for the CIs")
    parser.add_argument("--threshold-rule", choices=["youden", "f1"],
                        help="how thresholds are chosen on the validation split")
    parser.add_argument("--dataset-kind", choices=["synthetic", "real"],
                        help="said in every column label so synthetic numbers are never taken for real ones")
    parser.add_argument("--split-kind", choices=list(SPLIT_KINDS),
                        help="split of a raw dataset (official: NIH's lists when present; random: patients, "
                             "0.1/0.2, seed 0, as training's default data.split); a prepared output keeps prepare's")
    parser.add_argument("--beside", action="append", metavar="EVALUATION_OUT",
                        help="with --scores: the models of another evaluation's output (its metrics.json) as columns "
                             "beside these, each on its own test rows, labelled with its split, never paired "
                             "(e.g. a random-split run beside official-split ones; repeatable)")
    parser.add_argument("--tta", choices=list(TTA_KINDS),
                        help=f"with --checkpoint: test-time augmentation of the probabilities (hflip, or CheXNet's "
                             f"tencrop; thorax_ray.models.tta) (default: {NO_TTA}); --scores carry their own")
    add_cluster_arguments(parser)
    show_config_defaults(parser, FLAGS, EvaluationConfig)
    args = parser.parse_args(argv)
    if args.scores and args.tta is not None:
        parser.error(f"--tta {args.tta} applies to --checkpoint; scores carry the test-time augmentation they were "
                     "made with (jobs/score.py --tta; read_scores(...).attrs['tta'])")
    return args


def named_scores(values: list[str]) -> tuple[tuple[str, str], ...]:
    """`NAME=URI` split at the first `=` (a URI alone when no `=` comes before its `://`), or a URI named
    after its last path part. The names are checked by EvaluationConfig (plain file names, distinct)."""
    pairs = []
    for value in values:
        if "=" in value.split("://", 1)[0]:
            name, uri = value.split("=", 1)
        else:
            name, uri = value.rstrip("/").rsplit("/", 1)[-1], value
        if not uri:
            raise ValueError(f"--scores {value}: no URI after '='; expected NAME=URI")
        pairs.append((name, uri))
    return tuple(pairs)


FLAGS = {  # flag -> EvaluationConfig field (--checkpoint: no config, see main); every default is the field's
    "scores": Flag("scores", named_scores), "data": "data", "out": "out", "split": "split", "bootstrap": "n_boot",
    "threshold_rule": "threshold_rule", "dataset_kind": "dataset_kind", "s3_endpoint": "s3_endpoint",
    "split_kind": "split_kind", "beside": Flag("beside", tuple),
}


def build_config(args: argparse.Namespace) -> EvaluationConfig:
    """The config of a --scores evaluation."""
    return config_from_flags(EvaluationConfig, args, FLAGS)


def evaluated_split(args: argparse.Namespace) -> str:
    """--split, else EvaluationConfig's default: the --checkpoint evaluation has no config of its own."""
    return args.split or field_default(EvaluationConfig, "split")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    require_inputs({"--data": args.data, "--checkpoint": args.checkpoint}, endpoint_url=args.s3_endpoint)
    if args.scores:  # reads Parquet and computes on this process: no Ray needed
        config = build_config(args)
        require_inputs({f"--scores {name}=": uri for name, uri in config.scores}, endpoint_url=args.s3_endpoint)
        require_inputs({"--beside": storage.join(uri, "metrics.json") for uri in config.beside},
                       endpoint_url=args.s3_endpoint)
        from thorax_ray.evaluation.evaluate import evaluate_scores
        from thorax_ray.scoring import read_scores

        metrics = evaluate_scores(config, lambda uri: read_scores(uri, endpoint_url=args.s3_endpoint))
        print(metrics["table"])
        report = metrics["report"] if storage.is_remote(metrics["report"]) else os.path.abspath(metrics["report"])
        print(f"metrics: {storage.join(args.out, 'metrics.json')}\nreport: {report}")
        return 0

    from thorax_ray.checkpoint import resolve_checkpoint
    from thorax_ray.evaluation.checkpoint import evaluate_checkpoint

    checkpoint_dir = resolve_checkpoint(args.checkpoint, endpoint_url=args.s3_endpoint)  # none there: fail now
    split, tta = evaluated_split(args), args.tta or NO_TTA
    check_checkpoint_tta(checkpoint_dir, tta, endpoint_url=args.s3_endpoint)  # before Ray starts
    init_ray(args.address, verbose=args.verbose)
    metrics = evaluate_checkpoint(args.checkpoint, args.data, split, s3_endpoint=args.s3_endpoint, tta=tta)
    path = storage.join(args.out, "metrics.json")
    storage.write_json(path, metrics, endpoint_url=args.s3_endpoint)
    print(f"{metrics['model']} on {split} ({metrics['n_images']} images"
          + (f", tta {tta}" if tta != NO_TTA else "") + "): mean AUROC "
          f"{metrics['mean_auroc'] if metrics['mean_auroc'] is None else round(metrics['mean_auroc'], 4)}")
    for finding, value in metrics["auroc"].items():
        print(f"  {finding:<20} {'n/a' if value is None else f'{value:.4f}'}")
    print(f"metrics: {path}")
    return 0


if __name__ == "__main__":
    run_main(main)
