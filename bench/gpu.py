"""One-GPU benchmark (what `bench/gpu.sh` runs): DenseNet-121 at 224 px with the fast path of
`thorax_ray/accel.py` (bf16 autocast, channels_last, pinned prefetch, torch.compile on GPU).

Training images/s, each from the same model, optimiser, loss, augmentation and `train_step` as the Ray
Train loop (`thorax_ray/train/loop.py`), in this process (one GPU, no DDP):
  - synthetic: uint8 batches already on the device (the model's ceiling),
  - shards:    batches streamed from prepared Parquet shards by Ray Data (`iter_batches`), pinned and
               copied one batch ahead (`prefetch_to_device`), as a Train worker gets them,
  - input:     the shard stream alone, to the device, no model (what the input path can deliver).
`shards` well below `synthetic` with `input` close to `shards` means input is the bottleneck.

Scoring images/s: the scoring actor (`thorax_ray/scoring/scorer.py: Scorer`) on batches of shard rows
held in memory: predictions only (`--method none`) vs predictions + all-14-class maps and boxes
(`fast_cam`), i.e. the in-actor rate of `jobs/score.py` (reading/decoding runs in other Ray tasks).

    python bench/gpu.py                                     # GPU defaults (not yet run on a GPU; stops itself at 290 s)
    python bench/gpu.py --model small_cnn --size 32 --images 96 --train-steps 3   # tiny, CPU

Prints a table and ends with one JSON line. Goals on one H100: >= 2,500 training and >= 8,000 scored
(with maps) images/s.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import emit  # noqa: E402

GOAL_TRAIN_IPS, GOAL_SCORE_IPS = 2500, 8000


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_objects(args, fast, label_counts, rows):
    import numpy as np
    import torch

    from thorax_ray.losses import LossConfig, build_loss
    from thorax_ray.models import create_model
    from thorax_ray.train.config import AugmentConfig, preprocessing_contract

    torch.manual_seed(0)
    model = fast.prepare_model(create_model(args.model))
    model.train()
    trained = fast.maybe_compile(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = build_loss(LossConfig(kind="class_balanced_bce"), label_counts=np.asarray(label_counts),
                         num_samples=rows).to(fast.device)
    return {"trained": trained, "optimizer": optimizer, "loss_fn": loss_fn, "spec": model.spec,
            "contract": preprocessing_contract(args.size), "augment": AugmentConfig(),
            "generator": torch.Generator().manual_seed(0), "fast": fast}


def timed_steps(batches, step, warmup: int, steps: int, device) -> tuple[float, int]:
    """Images/s over `steps` batches after `warmup` (compilation, cuDNN autotuning, pipeline start)."""
    seen, started, done = 0, None, 0
    try:
        for batch in batches:
            loss = step(batch)
            done += 1
            if done == warmup:
                float(loss.detach())  # waits for the warm-up work
                sync(device)
                started = time.perf_counter()
            elif done > warmup:
                seen += len(batch.labels)
            if done >= warmup + steps:
                break
        sync(device)
        elapsed = time.perf_counter() - started if started is not None else 0.0
    finally:
        if hasattr(batches, "close"):
            batches.close()  # stops the Ray Data stream behind it
    if started is None or seen == 0:
        raise RuntimeError(f"only {done} batches (warm-up {warmup}); use more --images or fewer steps")
    return seen / elapsed, seen


def shard_batches(dataset, args, fast, stored_size: int):
    """Endless stream of device batches from the shards (epoch after epoch), as a Train worker gets them."""
    from thorax_ray.accel import prefetch_to_device
    from thorax_ray.train.batches import batch_from_arrow

    def make(table):
        return batch_from_arrow(table, stored_size=stored_size)

    while True:
        tables = dataset.iter_batches(batch_size=args.batch_size, batch_format="pyarrow", drop_last=True,
                                      prefetch_batches=fast.prefetch_batches)
        yield from prefetch_to_device(tables, fast, make=make)


def bench_training(args, fast, prepared: str, record: dict) -> dict:
    import torch

    from thorax_ray.data.shards import read_prepared
    from thorax_ray.labels import FINDING_COLUMNS
    from thorax_ray.train.batches import Batch
    from thorax_ray.train.loop import train_step

    columns = ["image_index", "image", *FINDING_COLUMNS]
    dataset = read_prepared(prepared, columns=columns)
    from thorax_ray.train.config import DataConfig
    from thorax_ray.train.data import open_source

    label_counts, rows = open_source(DataConfig(data=prepared, size=args.size)).label_counts("train")
    objects = train_objects(args, fast, label_counts=label_counts, rows=rows)
    stored = int(record["size"])

    def step(batch):
        return train_step(objects["trained"], objects["optimizer"], objects["loss_fn"], batch, spec=objects["spec"],
                          contract=objects["contract"], augment=objects["augment"],
                          generator=objects["generator"], fast=fast)

    # Synthetic: one uint8 batch already on the device, stepped repeatedly.
    g = torch.Generator().manual_seed(1)
    synthetic = Batch(image_index=[str(i) for i in range(args.batch_size)],
                      labels=(torch.rand(args.batch_size, 14, generator=g) < 0.1).float().to(fast.device),
                      images=torch.randint(0, 256, (args.batch_size, 1, stored, stored), dtype=torch.uint8,
                                           generator=g).to(fast.device),
                      features=None)

    def forever():
        while True:
            yield synthetic

    results = {}
    print(f"training: {args.model} at {args.size} px (stored {stored} px), batch {args.batch_size}, "
          f"{fast.describe()}", flush=True)
    results["train_synthetic"], _ = timed_steps(forever(), step, args.warmup_steps, args.train_steps, fast.device)
    print(f"  synthetic tensors: {results['train_synthetic']:.1f} images/s", flush=True)
    results["train_shards"], _ = timed_steps(shard_batches(dataset, args, fast, stored), step, args.warmup_steps,
                                             args.train_steps, fast.device)
    print(f"  prepared shards:   {results['train_shards']:.1f} images/s", flush=True)

    def touch(batch):  # input only: the batch is on the device, nothing computes on it
        return batch.images.view(-1)[:1].float().sum() if batch.images.is_cuda else batch.labels[0, 0]

    results["input_only"], _ = timed_steps(shard_batches(dataset, args, fast, stored), touch, args.warmup_steps,
                                           max(args.train_steps, 4 * args.warmup_steps), fast.device)
    print(f"  input path alone:  {results['input_only']:.1f} images/s", flush=True)
    return results


def bench_scoring(args, fast, prepared: str, record: dict, work: str) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.score import make_checkpoint
    from thorax_ray import storage
    from thorax_ray.data.shards import prepared_files
    from thorax_ray.scoring.scorer import Scorer
    from thorax_ray.train.checkpoint import checkpoint_model_id

    checkpoint = os.path.join(work, "checkpoint")
    os.makedirs(checkpoint, exist_ok=True)
    make_checkpoint(checkpoint, args.model, args.size)
    model_id = checkpoint_model_id(checkpoint)
    _, files = prepared_files(prepared)
    fs, _ = storage.filesystem(prepared)
    tables = []
    for uri in files:
        with fs.open(uri.split("://", 1)[-1], "rb") as handle:
            tables.append(pq.read_table(handle, columns=["image_index", "path", "image"]))
    table = pa.concat_tables(tables).combine_chunks()
    n = table.num_rows
    side = np.full(n, 1024, np.int32)  # boxes in the frame of a real 1024 px original
    table = (table.append_column("width", pa.array(side)).append_column("height", pa.array(side))
             .append_column("ok", pa.array(np.ones(n, bool))))
    batches = [table.slice(i, args.score_batch_size) for i in range(0, n - args.score_batch_size + 1,
                                                                   args.score_batch_size)]
    if not batches:
        raise RuntimeError(f"{n} prepared rows: fewer than one scoring batch of {args.score_batch_size}")
    results = {}
    for method in ("none", "fast_cam"):
        scorer = Scorer(checkpoint_dir=checkpoint, model_id=model_id, method=method, stored_size=int(record["size"]),
                        run_id="bench", batch_date="2000-01-01", max_map_side=8,
                        threads=args.threads)
        for i in range(args.warmup_steps):  # cuDNN autotuning, allocator
            scorer(batches[i % len(batches)])
        seen, started = 0, time.perf_counter()
        for i in range(args.score_batches):
            out = scorer(batches[i % len(batches)])  # returns host tables: each call is synchronised
            seen += out.num_rows
        rate = seen / (time.perf_counter() - started)
        results["score_predictions" if method == "none" else "score_fast_cam"] = rate
        print(f"  scoring ({method}): {rate:.1f} images/s", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="densenet121")
    parser.add_argument("--size", type=int, default=224, help="model input side (prepared shards are stored at it)")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch per GPU")
    parser.add_argument("--score-batch-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=4096, help="synthetic images generated and prepared")
    parser.add_argument("--source-size", type=int, default=256, help="side of the synthetic PNGs")
    parser.add_argument("--data", help="an existing prepared output (prepared.json) instead of generating one")
    parser.add_argument("--warmup-steps", type=int, default=15)
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--score-batches", type=int, default=60)
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="torch.compile the training model (auto: on GPU only)")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()

    import torch

    from thorax_ray.accel import FastPath

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) else
                          ("cpu" if args.device == "auto" else args.device))
    fast = FastPath.for_device(device, compile={"auto": None, "on": True, "off": False}[args.compile])
    fast.setup()
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else None

    import ray

    from thorax_ray.data.pipeline import ImageConfig
    from thorax_ray.data.prepare import PrepareConfig, prepare
    from thorax_ray.data.shards import read_commit
    from thorax_ray.synthetic.dataset import SyntheticConfig, write_synthetic_dataset

    started = time.monotonic()
    from thorax_ray.ray_setup import use_private_token

    use_private_token()  # a private Ray, with token authentication like every job's
    ray.init(address="local", include_dashboard=False, log_to_driver=False, num_cpus=(os.cpu_count() or 1) + 1)
    ray.data.DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory() as work:
        prepared = args.data
        if prepared is None:
            prepared = os.path.join(work, "prepared")
            write_synthetic_dataset(SyntheticConfig(out=os.path.join(work, "raw"), images=args.images,
                                                    size=args.source_size, seed=5), progress=False)
            prepare(PrepareConfig(data=os.path.join(work, "raw"), out=prepared, image=ImageConfig(size=args.size)))
        record = read_commit(prepared)
        if record is None:
            raise SystemExit(f"{prepared}: not a prepared output (no prepared.json)")
        setup_s = time.monotonic() - started
        print(f"prepared shards: {prepared} ({record['size']} px) ready after {setup_s:.0f} s", flush=True)
        results = bench_training(args, fast, prepared, record)
        results.update(bench_scoring(args, fast, prepared, record, work))
    ray.shutdown()

    where = gpu_name or f"CPU ({os.cpu_count()} cores)"
    input_bound = results["train_shards"] < 0.9 * results["train_synthetic"]
    print(f"\nGPU benchmark: {args.model} at {args.size} px on {where}; {fast.describe()}")
    print(f"train batch {args.batch_size}, score batch {args.score_batch_size}; "
          f"input workers per GPU on this node: {_input_workers(os.cpu_count(), max(1, torch.cuda.device_count()))}")
    header = f"{'measure':<44}{'images/s':>10}{'vs synthetic':>14}{'goal (H100)':>13}"
    print(header)
    rows = [("training, synthetic tensors on the device", results["train_synthetic"], GOAL_TRAIN_IPS),
            ("training, prepared shards (Ray Data)", results["train_shards"], GOAL_TRAIN_IPS),
            ("input path alone (shards -> device)", results["input_only"], None),
            ("scoring, predictions only", results["score_predictions"], None),
            ("scoring, + fast all-class maps and boxes", results["score_fast_cam"], GOAL_SCORE_IPS)]
    for label, value, goal in rows:
        ratio = value / results["train_synthetic"] if label.startswith(("training", "input")) else None
        print(f"{label:<44}{value:>10.1f}{'' if ratio is None else f'{ratio:.2f}':>14}"
              f"{'' if goal is None else f'>= {goal:,}':>13}")
    print(f"input is {'the' if input_bound else 'not the'} bottleneck "
          f"(shards {results['train_shards'] / results['train_synthetic']:.0%} of synthetic); "
          f"maps cost {results['score_predictions'] / results['score_fast_cam']:.2f}x predictions")
    on_h100 = bool(gpu_name and "H100" in gpu_name)
    emit({"bench": "gpu", "device": device.type, "gpu": gpu_name, "model": args.model, "size": args.size,
          "batch_size": args.batch_size, "score_batch_size": args.score_batch_size,
          "autocast": str(fast.autocast_dtype).replace("torch.", "") if fast.autocast_dtype else None,
          "channels_last": fast.channels_last, "compile": fast.compile,
          "train_synthetic_ips": round(results["train_synthetic"], 1),
          "train_shards_ips": round(results["train_shards"], 1),
          "input_only_ips": round(results["input_only"], 1), "input_bound": input_bound,
          "score_predictions_ips": round(results["score_predictions"], 1),
          "score_fast_cam_ips": round(results["score_fast_cam"], 1),
          "fast_maps_cost_vs_predictions": round(results["score_predictions"] / results["score_fast_cam"], 2),
          "goal_train_ips": GOAL_TRAIN_IPS, "goal_score_ips": GOAL_SCORE_IPS,
          "meets_goals": (results["train_shards"] >= GOAL_TRAIN_IPS and results["score_fast_cam"] >= GOAL_SCORE_IPS)
          if on_h100 else None,
          "setup_s": round(setup_s, 1), "total_s": round(time.monotonic() - started, 1)})


def _input_workers(cpus: float | None = None, gpus: int = 0) -> int:
    """CPUs of a node available to the input pipeline per GPU (Ray Data read/decode tasks), at least 1
    (one CPU per GPU is left for its training worker)."""
    cpus = float(cpus if cpus is not None else (os.cpu_count() or 1))
    return max(1, int(cpus // max(gpus, 1)) - 1)


if __name__ == "__main__":
    main()
