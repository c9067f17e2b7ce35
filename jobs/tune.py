"""Hyperparameter search with Ray Tune: every trial is a real Ray Train run (the code path of
jobs/train.py), ASHA stops poor trials early on the validation mean AUROC.

    python jobs/tune.py --space tune_spaces/smoke.yaml --data data/demo --out out/tune-smoke
    python jobs/tune.py --space tune_spaces/cnn.yaml --data s3://bucket/prepared --storage s3://bucket/tune --trials 24
    python jobs/train.py --config out/tune-smoke/best_config.yaml     # train the winner

Trials run up to floor(CPUs / (workers x cpus_per_worker + 1)) at a time, and with GPUs at most
floor(GPUs / workers), counting the nodes the autoscaler can launch; without --address, on this machine's
cores (one trial at a time on 2 cores, each trial being ~8 Ray processes). Running the same
command again (same --name, default the space's file name, and --storage) resumes an interrupted
experiment: finished trials are kept, unfinished ones continue from their latest epoch checkpoint.
Writes OUT/results.csv and OUT/best_config.yaml and prints the top trials.
"""
from __future__ import annotations

import argparse
import sys

from thorax_ray.cli import (add_cluster_arguments, add_gpu_arguments, job_parser, non_negative_int, positive_int,
                            run_main, setup_logging)
from thorax_ray.cluster import cluster_capacity
from thorax_ray.config_io import overrides_from_flags
from thorax_ray.models import require_pretrained_weights
from thorax_ray.names import safe_name
from thorax_ray.preflight import require_inputs
from thorax_ray.ray_setup import init_ray
from thorax_ray.tune.results import format_table
from thorax_ray.tune.space import load_space

FLAGS = {  # flag -> TrainConfig field: fixed overrides of the space's base
    "data": "data.data", "limit": "data.limit", "s3_endpoint": "data.s3_endpoint",
    "epochs": "optim.epochs", "workers": "run.workers", "use_gpu": "run.use_gpu",
    "cluster_config": "run.cluster_config", "shared_fs": "run.shared_fs", "placement_timeout": "run.placement_timeout_s",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = job_parser(__doc__)
    parser.add_argument("--space", required=True, help="search space YAML (tune_spaces/*.yaml)")
    parser.add_argument("--data", help="dataset for every trial (default: the space's base data.data)")
    parser.add_argument("--trials", type=positive_int, help="number of trials, rounded up to a multiple of the "
                                                            "grid size (default: the space's tune.num_samples)")
    parser.add_argument("--storage", default="runs/tune", help="folder or s3:// URI of Tune experiments")
    parser.add_argument("--name", help="experiment name, a plain file name; the same name resumes "
                                       "(default: the space's file name)")
    parser.add_argument("--out", help="where results.csv and best_config.yaml go (default: out/tune-NAME)")
    parser.add_argument("--epochs", type=int, help="epochs per trial (ASHA's max_t), overriding the space's base "
                                                   "(default: its optim.epochs)")
    parser.add_argument("--workers", type=int, help="Ray Train workers per trial, overriding the space's base "
                                                    "(default: its run.workers)")
    parser.add_argument("--limit", type=int, help="at most this many rows per split in every trial "
                                                  "(default: the space's data.limit)")
    parser.add_argument("--max-concurrent", type=positive_int,
                        help="at most this many trials at a time (default: by the CPUs and GPUs the cluster has or can "
                             "launch)")
    parser.add_argument("--top", type=non_negative_int, default=5, help="trials printed at the end")
    add_cluster_arguments(parser)
    add_gpu_arguments(parser, "one GPU per Train worker of each trial")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    space = load_space(args.space)
    overrides = overrides_from_flags(args, FLAGS)
    if overrides:
        space = space.with_base(overrides)
    name = safe_name("experiment name", args.name or space.name, where="--name" if args.name else args.space)
    out = args.out or f"out/tune-{name}"
    base = space.base_config()
    require_inputs({"--data": base.data.data}, endpoint_url=base.data.s3_endpoint)  # before Ray starts
    require_pretrained_weights(base.model.name, base.model.pretrained, base.model.backbone,
                               endpoint_url=base.data.s3_endpoint)
    local = init_ray(args.address, verbose=args.verbose)
    capacity = cluster_capacity(base.run.cluster_config, local=local)
    from thorax_ray.tune.tune import run_sweep

    outcome = run_sweep(space, storage_uri=args.storage, name=name, out_dir=out, trials=args.trials,
                        max_concurrent=args.max_concurrent, capacity=capacity, verbose=1 if args.verbose else 0)
    rows = outcome.rows
    early = sum(r.stopped_early for r in rows)
    print(f"\n[tune] {len(rows)} trials ({early} stopped early by ASHA, "
          f"{sum(r.status == 'ERROR' for r in rows)} failed){' - resumed run' if outcome.resumed else ''}")
    print(f"[tune] top trials by {space.tune.metric}:\n{format_table(rows, args.top)}")
    print(f"[tune] results: {outcome.results_csv}")
    if outcome.best_config_path:
        print(f"[tune] best config: {outcome.best_config_path}  "
              f"(python jobs/train.py --config {outcome.best_config_path})")
    if outcome.interrupted:
        print(f"[tune] interrupted: run the same command again to resume {outcome.experiment_path}",
              file=sys.stderr)
        return 130
    if outcome.best_config_path is None:
        print("[tune] no trial produced a usable metric", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_main(main, on_interrupt="the sweep stopped; finished trials are kept and the same command resumes the experiment")
