"""Training-loop benchmark: this project's Ray Train loop against a plain single-process PyTorch loop with
the same model, batch size, threads, preprocessing and data, in one run.

    python bench/train_step.py [--model resnet18] [--size 128] [--images 2000] [--epochs 3] [--threads 2] [--rounds 3]
    python bench/train_step.py --model mlp [--rows 112120] [--workers 2] [--batch-size 256]

Image models: images/s of the training loop (one worker, prepared shards streamed by Ray Data) against a
plain loop over the same shards read into memory first, in rounds plain, Ray, plain, ... (the ratio is the
median of each Ray run against the plain runs around it). `--model mlp`: epoch time (training plus
validation: every epoch of both loops scores the validation rows and computes the AUROCs; Ray's epoch also
holds its checkpoint and report) on a metadata-only dataset with the NIH's row count, against a plain loop
over the same encoded features. The first epoch of each loop is warm-up and not counted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import emit  # noqa: E402


def plain_loop(prepared: str, args) -> float:
    """Images/s of a plain PyTorch loop over the train split held in memory."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from thorax_ray.data.preprocess import batch_from_arrow, normalise_images, preprocessing_contract
    from thorax_ray.data.shards import prepared_files
    from thorax_ray.losses import build_loss
    from thorax_ray.models import create_model
    from thorax_ray.train.augment import augment_batch
    from thorax_ray.train.config import AugmentConfig, LossConfig

    torch.set_num_threads(args.threads)
    record, files = prepared_files(prepared, ["train"])
    table = pa.concat_tables([pq.read_table(f) for f in files])
    model = create_model(args.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = build_loss(LossConfig())
    contract = preprocessing_contract(args.size)
    generator = torch.Generator().manual_seed(0)
    device = torch.device("cpu")
    rates = []
    for epoch in range(args.epochs):
        started = time.monotonic()
        seen = 0
        order = np.random.default_rng(epoch).permutation(len(table))
        model.train()
        for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
            batch = batch_from_arrow(table.take(order[start:start + args.batch_size]), stored_size=record["size"])
            images = augment_batch(normalise_images(batch.images, contract, device=device), AugmentConfig(), generator)
            loss = loss_fn(model(images), batch.labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(batch.labels)
        if epoch > 0:
            rates.append(seen / (time.monotonic() - started))
    return rates


def plain_mlp_epoch(data: str, args) -> tuple[float, float]:
    """(seconds per epoch with validation, of which training) of a plain PyTorch loop over encoded rows."""
    import numpy as np
    import torch

    from thorax_ray.data.sources import DataConfig, open_source
    from thorax_ray.labels import FINDING_COLUMNS
    from thorax_ray.losses import build_loss
    from thorax_ray.metrics import per_class_auroc
    from thorax_ray.models import MetadataFeatures, create_model
    from thorax_ray.train.config import LossConfig

    torch.set_num_threads(args.threads)
    source = open_source(DataConfig(data=data))
    features = MetadataFeatures()
    train, val = source.rows("train"), source.rows("val")
    x, vx = torch.from_numpy(features.encode(train)), torch.from_numpy(features.encode(val))
    y = torch.from_numpy(train[list(FINDING_COLUMNS)].to_numpy(dtype=np.float32))
    val_labels = val[list(FINDING_COLUMNS)].to_numpy(dtype=np.float32)
    model = create_model("mlp", metadata_features=features)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = build_loss(LossConfig())
    walls, trains = [], []
    for epoch in range(args.epochs):
        started = time.monotonic()
        model.train()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
            index = order[start:start + args.batch_size]
            loss = loss_fn(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        trained = time.monotonic()
        model.eval()
        with torch.no_grad():
            probabilities = np.concatenate([torch.sigmoid(model(vx[i:i + 1024])).numpy() for i in range(0, len(vx), 1024)])
        per_class_auroc(val_labels, probabilities)
        if epoch > 0:
            walls.append(time.monotonic() - started)
            trains.append(trained - started)
    return sum(walls) / len(walls), sum(trains) / len(trains)


def ray_mlp_epoch(data: str, storage: str, args) -> tuple[float, list[dict]]:
    """Mean epoch wall time (epochs after the first) of the Ray Train loop, and its history."""
    from thorax_ray.train.config import TrainConfig
    from thorax_ray.train.train import fit

    config = TrainConfig.from_dict({
        "data": {"data": data, "batch_size": args.batch_size}, "model": {"name": "mlp"},
        "optim": {"epochs": args.epochs, "scheduler": "none"},
        "run": {"storage": storage, "name": "bench-mlp", "workers": args.workers, "cpus_per_worker": 1.0,
                "threads_per_worker": args.threads},
    })
    history = fit(config).metrics["history"]
    walls = [h.get("wall_seconds", h["seconds"]) for h in history[1:]]
    return sum(walls) / len(walls), history


def mlp_main(args) -> None:
    from thorax_ray.ray_setup import init_ray
    from thorax_ray.synthetic.dataset import SyntheticConfig, write_synthetic_dataset

    init_ray()
    import ray

    with tempfile.TemporaryDirectory() as work:
        write_synthetic_dataset(SyntheticConfig(out=f"{work}/meta", images=args.rows, seed=8, metadata_only=True),
                                progress=False)
        plain_before, plain_train = plain_mlp_epoch(f"{work}/meta", args)
        ray_epoch, history = ray_mlp_epoch(f"{work}/meta", f"{work}/runs", args)
        plain_after, _ = plain_mlp_epoch(f"{work}/meta", args)
    ray.shutdown()
    plain = min(plain_before, plain_after)  # the faster baseline counts (noisy machine)
    ratio = ray_epoch / plain
    rows = history[-1]["train_images"]
    print(f"\nmlp on {args.rows} metadata rows ({rows} trained per epoch, {history[-1]['val_images']} validated), "
          f"batch {args.batch_size}, {args.threads} thread(s) per process, Ray Train with {args.workers} worker(s); "
          f"{args.epochs - 1} timed epochs (first is warm-up)")
    print(f"{'loop':<44}{'s/epoch':>9}{'ratio':>8}")
    print(f"{'plain PyTorch (train + validation)':<44}{plain:>9.2f}{1.0:>8.2f}   (runs: {plain_before:.2f}, "
          f"{plain_after:.2f}; training alone {plain_train:.2f})")
    print(f"{'Ray Train (TorchTrainer, whole epoch)':<44}{ray_epoch:>9.2f}{ratio:>8.2f}")
    emit({"bench": "train_step", "model": "mlp", "rows": args.rows, "batch_size": args.batch_size,
          "workers": args.workers, "threads": args.threads, "plain_epoch_s": round(plain, 3),
          "plain_runs": [round(plain_before, 3), round(plain_after, 3)], "ray_epoch_s": round(ray_epoch, 3),
          "ratio_ray_over_plain": round(ratio, 3)})


def ray_loop(prepared: str, storage: str, args, name: str = "bench") -> list[float]:
    from thorax_ray.train.config import TrainConfig
    from thorax_ray.train.train import fit

    config = TrainConfig.from_dict({
        "data": {"data": prepared, "size": args.size, "batch_size": args.batch_size},
        "model": {"name": args.model}, "optim": {"epochs": args.epochs, "scheduler": "none"},
        "run": {"storage": storage, "name": name, "workers": 1, "cpus_per_worker": float(args.threads),
                "threads_per_worker": args.threads},
    })
    history = fit(config).metrics["history"][1:]
    return [h["train_images"] / h["train_seconds"] for h in history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=2000, help="images generated (about 70%% are train rows)")
    parser.add_argument("--rounds", type=int, default=3, help="image models: Ray runs, each between two plain runs")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, help="per worker (default: 32; mlp: 256)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per process (default: all cores; mlp: 1)")
    parser.add_argument("--rows", type=int, default=112120, help="mlp: metadata rows generated (the NIH's count)")
    parser.add_argument("--workers", type=int, default=2, help="mlp: Ray Train workers (default 2)")
    args = parser.parse_args()
    if args.model == "mlp":
        args.threads = args.threads or 1
        args.batch_size = args.batch_size or 256
        mlp_main(args)
        return
    args.threads = args.threads or os.cpu_count() or 1
    args.batch_size = args.batch_size or 32

    from thorax_ray.data.pipeline import ImageConfig
    from thorax_ray.data.prepare import PrepareConfig, prepare
    from thorax_ray.ray_setup import init_ray
    from thorax_ray.synthetic.dataset import SyntheticConfig, write_synthetic_dataset

    init_ray()
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory() as work:
        write_synthetic_dataset(SyntheticConfig(out=f"{work}/raw", images=args.images, size=args.size, seed=3),
                                progress=False)
        prepare(PrepareConfig(data=f"{work}/raw", out=f"{work}/prepared", image=ImageConfig(size=args.size)))
        # Plain, Ray, plain, Ray, ..., plain: this machine's neighbours change its speed by up to 1.7x from one
        # minute to the next, so each Ray run is compared with the plain runs right before and after it.
        plain_runs = [plain_loop(f"{work}/prepared", args)]
        ray_runs = []
        for round_ in range(args.rounds):
            ray_runs.append(ray_loop(f"{work}/prepared", f"{work}/runs", args, name=f"bench-{round_}"))
            plain_runs.append(plain_loop(f"{work}/prepared", args))
    ray.shutdown()
    # Per round: median images/s of the Ray run's timed epochs over the median of the plain epochs around it.
    ratios = [statistics.median(ray_rates) / statistics.median(plain_runs[i] + plain_runs[i + 1])
              for i, ray_rates in enumerate(ray_runs)]
    plain = statistics.median([r for run in plain_runs for r in run])
    ray_rate = statistics.median([r for run in ray_runs for r in run])
    ratio = statistics.median(ratios)
    print(f"\n{args.model} at {args.size} px, batch {args.batch_size}, {args.threads} threads, "
          f"{args.epochs - 1} timed epochs per loop (first is warm-up), {args.rounds} round(s) of plain/Ray/plain")
    print(f"{'loop':<40}{'images/s':>10}{'ratio':>8}")
    print(f"{'plain PyTorch (in-memory data)':<40}{plain:>10.1f}{1.0:>8.2f}   (runs: "
          f"{'; '.join(', '.join(f'{r:.0f}' for r in run) for run in plain_runs)})")
    print(f"{'Ray Train (TorchTrainer + Ray Data)':<40}{ray_rate:>10.1f}{ratio:>8.2f}   (runs: "
          f"{'; '.join(', '.join(f'{r:.0f}' for r in run) for run in ray_runs)}; per-round ratios "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; the ratio is their median)")
    emit({"bench": "train_step", "model": args.model, "size": args.size, "batch_size": args.batch_size,
          "threads": args.threads, "plain_images_s": round(plain, 1),
          "plain_epochs": [[round(r, 1) for r in run] for run in plain_runs], "ray_train_images_s": round(ray_rate, 1),
          "ray_epochs": [[round(r, 1) for r in run] for run in ray_runs], "round_ratios": [round(r, 3) for r in ratios],
          "ratio_ray_train": round(ratio, 3)})


if __name__ == "__main__":
    main()
