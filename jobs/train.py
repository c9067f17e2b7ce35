"""Train a model on Ray Train (DDP over `--workers` workers; gloo on CPU, NCCL + bf16 on GPU).

    python jobs/train.py                                   # embedded demo dataset, local Ray
    python jobs/train.py --data data/demo-prepared --model densenet121 --epochs 10 --workers 2
    ray job submit --working-dir . -- python jobs/train.py --data s3://bucket/prepared --storage s3://bucket/runs
    python jobs/train.py --config configs/x.yaml --lr 3e-4  # flags override the YAML

`--data` is a prepared output (jobs/prepare.py), a dataset folder/prefix (PNGs decoded on the fly) or,
for `--model mlp`, a metadata-only dataset. A run named like an earlier one resumes from its latest
checkpoint; checkpoints and metrics.json land in STORAGE/NAME. With none of --data, --config and
--model on a cluster without GPUs, the CPU demo profile applies (small_cnn, 128 px, 4 epochs).
The defaults below are TrainConfig's (thorax_ray/train/config.py); a --config YAML overrides them
and flags override both. Inputs and settings are checked before Ray starts.
"""
from __future__ import annotations

import argparse
import json

from thorax_ray import console
from thorax_ray.cli import (add_cluster_arguments, add_gpu_arguments, job_parser, non_negative_int, run_main,
                            setup_logging, show_config_defaults, zero_means_none)
from thorax_ray.cluster import cluster_capacity, resolve_use_gpu
from thorax_ray.config_io import Flag, overrides_from_flags
from thorax_ray.data.splits import SPLIT_KINDS
from thorax_ray.losses import LOSS_KINDS
from thorax_ray.models import AVAILABLE_FEATURES, DEFAULT_FEATURES, list_models, require_pretrained_weights
from thorax_ray.preflight import require_inputs
from thorax_ray.ray_setup import init_ray
from thorax_ray.synthetic.demo import ensure_demo_dataset
from thorax_ray.train.config import SELECT_BY, TrainConfig
from thorax_ray.train.lr_schedule import lr_rule_problem

FLAGS = {  # flag -> TrainConfig field
    "data": "data.data", "size": "data.size", "batch_size": "data.batch_size",
    "limit": "data.limit", "s3_endpoint": "data.s3_endpoint", "split_kind": "data.split.kind",
    "model": "model.name", "backbone": "model.backbone", "pretrained": "model.pretrained",
    "output_stride": "model.output_stride", "metadata_features": "model.metadata_features",
    "epochs": "optim.epochs", "lr": "optim.lr", "weight_decay": "optim.weight_decay",
    "lr_scaling": "optim.lr_scaling", "warmup_epochs": "optim.warmup_epochs", "select_by": "optim.select_by",
    "hflip": "augment.hflip",
    "loss": "loss.kind", "workers": "run.workers", "storage": "run.storage", "name": "run.name",
    "seed": "run.seed", "max_failures": "run.max_failures", "keep_checkpoints": Flag("run.keep_checkpoints", zero_means_none),
    "use_gpu": "run.use_gpu",
    "cluster_config": "run.cluster_config", "shared_fs": "run.shared_fs", "placement_timeout": "run.placement_timeout_s",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = job_parser(__doc__)
    parser.add_argument("--config", help="YAML file with sections data/model/loss/optim/augment/run (default: none)")
    parser.add_argument("--data", help="prepared output, dataset folder or s3:// prefix "
                                       "(default: the demo dataset, data/demo, generated if missing)")
    parser.add_argument("--model", choices=list_models(), help="architecture")
    parser.add_argument("--backbone", choices=list_models("image"), help="CNN of fusion")
    parser.add_argument("--pretrained", metavar="imagenet|PATH_OR_URI",
                        help="'imagenet': torchvision's ImageNet weights of the CNN (from the torch hub cache, "
                             "downloaded there on first use); or a path/URI of ImageNet-style weights "
                             "(default: random init)")
    parser.add_argument("--metadata-features", type=lambda text: [f.strip() for f in text.split(",") if f.strip()],
                        metavar="F1,F2,...",
                        help=f"what mlp / fusion read (default {','.join(DEFAULT_FEATURES)}; add follow_up to "
                             f"include Follow-up #; known: {','.join(AVAILABLE_FEATURES)})")
    parser.add_argument("--output-stride", type=int, choices=[1, 2, 4, 8, 16],
                        help="small_cnn's feature-map stride (default 8: 16x16 heatmaps at 128 px, cells of 64 px of a 1024-px original; 16: 8x8)")
    parser.add_argument("--epochs", type=int, help="epochs to train")
    parser.add_argument("--workers", type=int, help="Ray Train workers (DDP ranks)")
    parser.add_argument("--storage", help="folder or s3:// URI for checkpoints")
    parser.add_argument("--name", help="run name, a plain file name; the same name resumes (default: thorax-MODEL)")
    parser.add_argument("--size", type=int, help="input side in pixels")
    parser.add_argument("--batch-size", type=int,
                        help="rows per worker per step (default: 16 for models that read images, 256 for mlp)")
    parser.add_argument("--lr", type=float, help="learning rate at --base-batch images per step (see --lr-scaling)")
    parser.add_argument("--lr-scaling", choices=["none", "linear", "sqrt"],
                        help="scale lr to the global batch (workers x batch size): none, linear, sqrt")
    parser.add_argument("--warmup-epochs", type=int, help="linear warm-up epochs to the scaled lr")
    parser.add_argument("--select-by", choices=list(SELECT_BY),
                        help="validation metric driving the plateau scheduler and the best checkpoint "
                             "(val_loss: CheXNet's)")
    parser.add_argument("--hflip", action="store_true", default=None,
                        help="random horizontal flips (default: off; a flip mirrors the heart)")
    parser.add_argument("--weight-decay", type=float, help="Adam weight decay")
    parser.add_argument("--loss", choices=list(LOSS_KINDS), help="loss kind")
    parser.add_argument("--limit", type=int, help="at most this many rows per split (smoke runs)")
    parser.add_argument("--split-kind", choices=list(SPLIT_KINDS),
                        help="split of a raw dataset: official (NIH's lists when present) or random (patients; "
                             "fractions and seed in the config's data.split); a prepared output keeps prepare's")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--max-failures", type=int, help="worker-group restarts from the latest checkpoint")
    parser.add_argument("--keep-checkpoints", type=non_negative_int, metavar="K",
                        help="checkpoints kept: the K best by --select-by, plus the latest (0: every one)")
    add_cluster_arguments(parser)
    add_gpu_arguments(parser, "one GPU per worker")
    show_config_defaults(parser, FLAGS, TrainConfig)
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> TrainConfig:
    overrides = overrides_from_flags(args, FLAGS)
    if args.config:
        return TrainConfig.from_yaml(args.config, overrides)
    return TrainConfig.from_dict(overrides)


def cpu_demo_profile(config: TrainConfig, args: argparse.Namespace, capacity) -> TrainConfig:
    """With no model chosen and no GPU, the demo trains the small CNN at 128 px so it ends in minutes."""
    if args.model or resolve_use_gpu(config.run.use_gpu, capacity):
        return config
    print("[train] no GPU and no --model: using the CPU demo profile (small_cnn, 128 px, 4 epochs); "
          "pass --model densenet121 for CheXNet's architecture", flush=True)
    return config.replace(model={"name": "small_cnn"}, data={"size": args.size or 128},
                          optim={"epochs": args.epochs or 4})


def check_inputs(config: TrainConfig, args: argparse.Namespace) -> None:
    """Before Ray starts: the data (unless it is the demo dataset, generated below) and weights exist, and the
    learning-rate rule holds for the global batch (Adam's square-root rule outside its range is an error;
    linear scaling, SGD's rule, gets one warning line)."""
    problem = lr_rule_problem(config.optim, config.batch_size * config.run.workers)
    if problem and config.optim.lr_scaling == "sqrt":
        raise ValueError(problem)
    if problem:
        console.say("train", f"warning: {problem}")
    demo = args.data is None and not args.config
    require_inputs({"--data": None if demo else config.data.data}, endpoint_url=config.data.s3_endpoint)
    require_pretrained_weights(config.model.name, config.model.pretrained, config.model.backbone,
                               endpoint_url=config.data.s3_endpoint)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    config = build_config(args)  # validated (values, names, YAML) before anything starts
    check_inputs(config, args)
    if args.data is None and not args.config:
        ensure_demo_dataset(config.data.data)
    local = init_ray(args.address, verbose=args.verbose)
    capacity = cluster_capacity(config.run.cluster_config, local=local)
    if args.data is None and not args.config:
        config = cpu_demo_profile(config, args, capacity)
    from thorax_ray.train.train import fit

    result = fit(config, capacity=capacity)
    if result.error:
        raise RuntimeError(f"training failed: {result.error}")
    summary = {k: result.metrics.get(k) for k in ("model", "best_epoch", "best_checkpoint", "split_hash")}
    summary["val_mean_auroc"] = (result.metrics.get("val") or {}).get("mean_auroc")
    print(f"[train] done: {json.dumps(summary)}\n[train] run folder: {result.run_dir}")
    return 0


if __name__ == "__main__":
    run_main(main, on_interrupt="training stopped; the epochs already checkpointed stay in the run folder and the same command resumes after the last of them")
