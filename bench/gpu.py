"""One-GPU benchmark (what `bench/gpu.sh` runs): DenseNet-121 at 224 px with the fast path of
`thorax_ray/accel.py` (bf16 autocast, channels_last, pinned prefetch, torch.compile on GPU).

Runs on the GPU machine as it is lent: in-process, without Ray, Captum, s3fs or pydicom, on whatever torch
is installed (2.11 or later). Measured, each with the same model, optimiser, loss, augmentation and
`train_step` as the Ray Train loop (`thorax_ray/train/loop.py`), one GPU, no DDP:
  - training, synthetic tensors: uint8 batches already on the device (the model's ceiling), eager and
    with torch.compile (GPU; on CPU only with --compile on),
  - training, prepared shards (pyarrow): batches read from prepared Parquet shards with pyarrow, pinned and
    copied one batch ahead (`prefetch_to_device`), as a Train worker gets them,
  - input path alone: the same shard stream to the device, no model (what the input path can deliver);
    `shards` well below `synthetic` with `input` close to `shards` means input is the wall,
  - scoring: the scoring actor (`thorax_ray/scoring/scorer.py: Scorer`) with the torch threads the scoring
    job gives each actor, on shard rows held in memory: predictions only vs + fast all-class maps and boxes,
  - collectives: the training loop's collectives (`thorax_ray/train/collectives.py`) in an NCCL process
    group on the GPU (one rank: one GPU cannot hold two NCCL ranks; gloo on CPU), so a CPU tensor reaching
    a collective fails here as it would in a multi-GPU run,
  - bf16 vs fp32: the largest difference in probability between bf16 autocast and fp32 on the same
    weights and images.
Where Ray is installed (a cluster node) it also measures the Ray Data stream of the same shards (`--no-ray`
skips it) and, with `--ray-train`, a one-worker Ray Train run of the project's loop.

    python bench/gpu.py                                     # GPU defaults; stops itself within --budget-s
    python bench/gpu.py --model small_cnn --size 32 --images 96 --train-steps 3 --device cpu   # tiny, CPU

Prints one table and ends with one JSON line. Goals: one H200 >= 3,000 training images/s (prepared shards)
and >= 10,000 scored images/s with maps; one H100 >= 2,500 and >= 8,000. Judged only on those GPUs.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import emit  # noqa: E402

# (GPU name contains, training images/s on prepared shards, scored images/s with maps)
GOALS = (("H200", 3000, 10000), ("H100", 2500, 8000))


def goals_for(gpu_name: str | None) -> tuple[str, int, int] | None:
    """The goals of the GPU named `gpu_name` (H200 before H100), None for any other device."""
    for name, train_ips, score_ips in GOALS:
        if gpu_name and name in gpu_name:
            return name, train_ips, score_ips
    return None


def ray_installed() -> bool:
    try:
        import ray  # noqa: F401 - only asked whether it imports
    except ImportError:
        return False
    return True


@dataclass
class Row:
    label: str
    value: float | None  # images/s (None: not measured, `note` says why)
    goal: int | None = None
    note: str = ""


@dataclass
class Budget:
    """The benchmark's own deadline: measures that would start after it are skipped (and say so)."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def run(self, rows: list[Row], label: str, measure, goal: int | None = None) -> float | None:
        if self.left() <= 0:
            rows.append(Row(label, None, goal, f"skipped: --budget-s {self.seconds:.0f} spent"))
        else:
            rows.append(Row(label, measure(), goal))
        print(f"  {label}: {_fmt(rows[-1].value)}{' ' + rows[-1].note if rows[-1].note else ''}", flush=True)
        return rows[-1].value


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(batches, step, warmup: int, steps: int, device) -> float:
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
            batches.close()  # stops the reader behind it
    if started is None or seen == 0:
        raise RuntimeError(f"only {done} batches (warm-up {warmup}); use more --images or fewer steps")
    return seen / elapsed


def new_trainer(args, fast, counts, rows: int, *, compiled: bool):
    """A `train_step` closure over a fresh model (seed 0), optimiser and loss, as the Ray Train loop builds them;
    every measure that uses it goes on training the same model (the rate does not depend on the weights)."""
    import torch

    from thorax_ray.data.preprocess import preprocessing_contract
    from thorax_ray.losses import LossConfig, build_loss
    from thorax_ray.models import create_model
    from thorax_ray.train.config import AugmentConfig
    from thorax_ray.train.loop import train_step

    torch.manual_seed(0)
    model = fast.prepare_model(create_model(args.model))
    model.train()
    trained = torch.compile(model) if compiled else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = build_loss(LossConfig(kind="class_balanced_bce"), label_counts=counts, num_samples=rows).to(fast.device)
    contract, augment, generator = preprocessing_contract(args.size), AugmentConfig(), torch.Generator().manual_seed(0)

    def step(batch):
        return train_step(trained, optimizer, loss_fn, batch, spec=model.spec, contract=contract, augment=augment,
                          generator=generator, fast=fast)

    return step


def synthetic_batches(args, fast, stored: int):
    """One uint8 batch already on the device, handed out forever."""
    import torch

    from thorax_ray.data.preprocess import Batch

    g = torch.Generator().manual_seed(1)
    batch = Batch(image_index=[str(i) for i in range(args.batch_size)],
                  labels=(torch.rand(args.batch_size, 14, generator=g) < 0.1).float().to(fast.device),
                  images=torch.randint(0, 256, (args.batch_size, 1, stored, stored), dtype=torch.uint8,
                                       generator=g).to(fast.device),
                  features=None)
    while True:
        yield batch


def pyarrow_batches(files: list[str], args, fast, stored: int):
    """Device batches from the shards read with pyarrow, pinned and copied one ahead (`prefetch_to_device`)."""
    from bench.gpu_data import shard_tables
    from thorax_ray.accel import prefetch_to_device
    from thorax_ray.data.preprocess import batch_from_arrow
    from thorax_ray.labels import FINDING_COLUMNS

    tables = shard_tables(files, batch_size=args.batch_size, columns=["image_index", "image", *FINDING_COLUMNS])
    return prefetch_to_device(tables, fast, make=lambda table: batch_from_arrow(table, stored_size=stored))


def ray_data_batches(prepared: str, args, fast, stored: int):
    """Device batches from the shards streamed by Ray Data (`iter_batches`), as a Train worker gets them."""
    from thorax_ray.accel import prefetch_to_device
    from thorax_ray.data.preprocess import batch_from_arrow
    from thorax_ray.data.shards import read_prepared
    from thorax_ray.labels import FINDING_COLUMNS

    dataset = read_prepared(prepared, ["train"], columns=["image_index", "image", *FINDING_COLUMNS])
    while True:
        tables = dataset.iter_batches(batch_size=args.batch_size, batch_format="pyarrow", drop_last=True,
                                      prefetch_batches=fast.prefetch_batches)
        yield from prefetch_to_device(tables, fast, make=lambda table: batch_from_arrow(table, stored_size=stored))


def input_only(batch):
    """The input path alone: the batch is on the device, nothing computes on it."""
    return batch.images.view(-1)[:1].float().sum() if batch.images.is_cuda else batch.labels[0, 0]


def measure_training(args, fast, budget: Budget, rows: list[Row], prepared: str, record: dict, goal: int | None,
                     with_ray: bool) -> None:
    from bench.gpu_data import label_counts
    from thorax_ray.data.shards import prepared_files

    stored = int(record["size"])
    train_files = prepared_files(prepared, ["train"])[1]
    counts, n = label_counts(train_files)
    compiled = fast.compile
    warm, steps = args.warmup_steps, args.train_steps
    print(f"training: {args.model} at {args.size} px (stored {stored} px), batch {args.batch_size}, "
          f"{fast.describe()}", flush=True)
    eager = new_trainer(args, fast, counts, n, compiled=False)
    budget.run(rows, "training, synthetic tensors on the device, eager", lambda: timed_steps(
        synthetic_batches(args, fast, stored), eager, warm, steps, fast.device))
    trainer = eager
    if compiled:  # one compiled model for both rows: compiling DenseNet-121 takes minutes
        trainer = new_trainer(args, fast, counts, n, compiled=True)
        budget.run(rows, "training, synthetic tensors on the device, torch.compile", lambda: timed_steps(
            synthetic_batches(args, fast, stored), trainer, warm, steps, fast.device))
    mode = "torch.compile" if compiled else "eager"
    budget.run(rows, f"training, prepared shards (pyarrow), {mode}", lambda: timed_steps(
        pyarrow_batches(train_files, args, fast, stored), trainer, warm, steps, fast.device), goal)
    budget.run(rows, "input path alone (pyarrow shards -> device)", lambda: timed_steps(
        pyarrow_batches(train_files, args, fast, stored), input_only, warm, max(steps, 4 * warm), fast.device))
    if with_ray:
        budget.run(rows, f"training, prepared shards (Ray Data), {mode}", lambda: timed_steps(
            ray_data_batches(prepared, args, fast, stored), trainer, warm, steps, fast.device))


def measure_ray_train(args, budget: Budget, rows: list[Row], prepared: str, work: str, use_gpu: bool) -> None:
    """Images/s of the project's Ray Train loop (one worker, epochs after the first)."""
    from thorax_ray.train.config import TrainConfig
    from thorax_ray.train.train import fit

    def measure() -> float:
        config = TrainConfig.from_dict({
            "data": {"data": prepared, "size": args.size, "batch_size": args.batch_size},
            "model": {"name": args.model}, "optim": {"epochs": 2, "scheduler": "none"},
            "run": {"storage": os.path.join(work, "runs"), "name": "gpu-bench", "workers": 1,
                    "use_gpu": use_gpu, "cpus_per_worker": 1.0},
        })
        history = fit(config, progress=False).metrics["history"][1:]
        return sum(h["train_images"] for h in history) / sum(h["train_seconds"] for h in history)

    budget.run(rows, "training, Ray Train loop (1 worker, epoch 2)", measure)


def scoring_batches(prepared: str, batch_size: int) -> list:
    """Shard rows held in memory as the scoring actor gets them (sources of a real 1024 px original)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from thorax_ray import storage
    from thorax_ray.data.shards import prepared_files

    tables = []
    for uri in prepared_files(prepared)[1]:
        fs, path = storage.filesystem(uri)
        with fs.open(path, "rb") as handle:
            tables.append(pq.read_table(handle, columns=["image_index", "path", "image"]))
    table = pa.concat_tables(tables).combine_chunks()
    n = table.num_rows
    side = np.full(n, 1024, np.int32)  # boxes in the frame of a real 1024 px original
    table = (table.append_column("width", pa.array(side)).append_column("height", pa.array(side))
             .append_column("ok", pa.array(np.ones(n, bool))))
    batches = [table.slice(i, batch_size) for i in range(0, n - batch_size + 1, batch_size)]
    if not batches:
        raise RuntimeError(f"{n} prepared rows: fewer than one scoring batch of {batch_size}")
    return batches


def measure_scoring(args, budget: Budget, rows: list[Row], batches: list, prepared: str, record: dict, work: str,
                    goal: int | None) -> int:
    """Scoring rows; returns the torch threads each scorer had (the scoring job's, per actor)."""
    from bench.score import make_checkpoint
    from thorax_ray.checkpoint import checkpoint_model_id
    from thorax_ray.labels import FINDINGS
    from thorax_ray.scoring.config import ScoreConfig, scorer_threads
    from thorax_ray.scoring.gate import FALLBACK_PROBABILITY
    from thorax_ray.scoring.scorer import NO_METHOD, Scorer, ScorerSettings

    checkpoint = os.path.join(work, "checkpoint")
    os.makedirs(checkpoint, exist_ok=True)
    make_checkpoint(checkpoint, args.model, args.size)
    model_id = checkpoint_model_id(checkpoint)
    config = ScoreConfig(checkpoint=checkpoint, input=prepared, out=os.path.join(work, "scores"), max_map_side=8)
    # The bench's checkpoint has no operating points: the job's gate falls back to one probability for every finding.
    gate = (FALLBACK_PROBABILITY,) * len(FINDINGS)
    threads = scorer_threads(config)
    print(f"scoring: batch {args.score_batch_size}, {threads} torch thread(s) per scorer (as the scoring job's "
          "actors)", flush=True)

    def measure(method: str) -> float:
        scorer = Scorer(ScorerSettings.from_config(
            config, checkpoint_dir=checkpoint, model_id=model_id, method=method, stored_size=int(record["size"]),
            run_id="bench", batch_date="2000-01-01", box_min_probability=gate))
        for i in range(args.warmup_steps):  # cuDNN autotuning, allocator
            scorer(batches[i % len(batches)])
        seen, started = 0, time.perf_counter()
        for i in range(args.score_batches):
            seen += scorer(batches[i % len(batches)]).num_rows  # host tables: each call is synchronised
        return seen / (time.perf_counter() - started)

    budget.run(rows, "scoring, predictions only", lambda: measure(NO_METHOD))
    budget.run(rows, "scoring, + fast all-class maps and boxes", lambda: measure("fast_cam"), goal)
    return threads


def check_collectives(device) -> str:
    """The training loop's collectives (loss sum, validation gather, record broadcast) in a one-rank process
    group on `device`: NCCL on a GPU (CUDA tensors only), gloo on CPU."""
    import numpy as np
    import torch
    import torch.distributed as dist

    from thorax_ray.models.predict import Predictions
    from thorax_ray.train.collectives import Collectives

    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        torch.cuda.set_device(device)  # object collectives on NCCL use the current device
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    try:
        collectives = Collectives(device)
        loss_sum = torch.full((), 12.5, dtype=torch.float64, device=device)
        total, seen = collectives.sum_values(loss_sum, 5)
        share = Predictions(image_index=["a", "b"], labels=np.zeros((2, 14), np.float32),
                            probabilities=np.full((2, 14), 0.5, np.float32))
        gathered = Predictions.concatenate(collectives.gather_objects(share))
        record = collectives.broadcast_object({"epoch": 1, "mean_auroc": 0.5})
        if (total, seen) != (12.5, 5.0) or len(gathered.image_index) != 2 or record["epoch"] != 1:
            raise RuntimeError(f"collectives gave wrong values: {total}, {seen}, {gathered.image_index}, {record}")
    finally:
        dist.destroy_process_group()
    return f"ok ({backend}, world size 1, {device.type} tensors)"


def bf16_difference(args, fast, table, record: dict) -> float:
    """Largest |p_bf16 - p_fp32| over one scoring batch of shard images, same weights (seed 0, eval mode);
    bf16 is autocast on the benchmark's device (CPU too)."""
    import torch

    from thorax_ray.data.pipeline import images_to_array
    from thorax_ray.data.preprocess import normalise_images, preprocessing_contract
    from thorax_ray.models import create_model

    pixels = torch.from_numpy(images_to_array(table.column("image"), int(record["size"])).copy()).unsqueeze(1)
    torch.manual_seed(0)
    model = fast.prepare_model(create_model(args.model)).eval()
    images = fast.images_layout(normalise_images(pixels, preprocessing_contract(args.size), device=fast.device))
    with torch.no_grad():
        fp32 = torch.sigmoid(model(images).float())
        with torch.autocast(fast.device.type, dtype=torch.bfloat16):
            bf16 = torch.sigmoid(model(images).float())
    return float((bf16 - fp32).abs().max())


def make_prepared(args, work: str) -> tuple[str, dict]:
    """`--data`, or a synthetic dataset generated and prepared in-process (no Ray)."""
    from bench.gpu_data import prepare_in_process
    from thorax_ray.data.shards import read_commit
    from thorax_ray.synthetic.dataset import SyntheticConfig, write_synthetic_dataset

    prepared = args.data
    if prepared is None:
        prepared, raw = os.path.join(work, "prepared"), os.path.join(work, "raw")
        write_synthetic_dataset(SyntheticConfig(out=raw, images=args.images, size=args.source_size, seed=5),
                                progress=False)
        prepare_in_process(raw, prepared, size=args.size, workers=max(1, (os.cpu_count() or 2) - 1))
    record = read_commit(prepared)
    if record is None:
        raise SystemExit(f"{prepared}: not a prepared output (no prepared.json)")
    return prepared, record


def start_ray() -> None:
    """A private Ray started as every job starts one (token authentication, Ray's console noise off), or the
    cluster that RAY_ADDRESS names."""
    from thorax_ray.ray_setup import init_ray

    init_ray()


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_table(rows: list[Row], goals: tuple[str, int, int] | None) -> None:
    base = next((r.value for r in rows if r.label.startswith("training, synthetic") and r.value), None)
    where = f"goal ({goals[0]})" if goals else "goal"
    print(f"{'measure':<62}{'images/s':>10}{'vs synthetic':>14}{where:>14}")
    for row in rows:
        ratio = (f"{row.value / base:.2f}" if base and row.value and row.label.startswith(("training", "input"))
                 else "")
        goal = f">= {row.goal:,}" if row.goal and goals else ""
        print(f"{row.label:<62}{_fmt(row.value):>10}{ratio:>14}{goal:>14}{'  ' + row.note if row.note else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="densenet121")
    parser.add_argument("--size", type=int, default=224, help="model input side (prepared shards are stored at it)")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch per GPU")
    parser.add_argument("--score-batch-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=4096, help="synthetic images generated and prepared")
    parser.add_argument("--source-size", type=int, default=256, help="side of the synthetic PNGs")
    parser.add_argument("--data", help="an existing local prepared output (prepared.json) instead of generating one")
    parser.add_argument("--warmup-steps", type=int, default=15)
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--score-batches", type=int, default=60)
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="also measure torch.compile (auto: on GPU only)")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Data measure")
    parser.add_argument("--ray-train", action="store_true",
                        help="where Ray is installed, also a one-worker Ray Train run (2 epochs; ~1 min on CPU)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="measures that would start later than this are skipped (gpu.sh kills at 480 s)")
    args = parser.parse_args()
    budget = Budget(args.budget_s)

    import torch

    from thorax_ray.accel import FastPath

    device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) else
                          ("cpu" if args.device == "auto" else args.device))
    fast = FastPath.for_device(device, compile={"auto": None, "on": True, "off": False}[args.compile])
    fast.setup()
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    goals = goals_for(gpu_name)
    with_ray = ray_installed() and not args.no_ray
    print(f"torch {torch.__version__} on {gpu_name or 'CPU'}; "
          + ("Ray installed: also the Ray Data path" + (" and Ray Train" if args.ray_train else "") if with_ray else
             "Ray is not installed here: in-process paths only" if not ray_installed() else "--no-ray"), flush=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as work:
        prepared, record = make_prepared(args, work)
        setup_s = time.monotonic() - budget.started
        print(f"prepared shards: {prepared} ({record['size']} px, {sum(record['written'].values())} images) "
              f"ready after {setup_s:.0f} s", flush=True)
        if with_ray:
            start_ray()
        measure_training(args, fast, budget, rows, prepared, record, goals[1] if goals else None, with_ray)
        if with_ray and args.ray_train:
            measure_ray_train(args, budget, rows, prepared, work, use_gpu=device.type == "cuda")
        collectives = check_collectives(device)
        print(f"  collectives: {collectives}", flush=True)
        batches = scoring_batches(prepared, args.score_batch_size)  # the shards read once, for both
        difference = bf16_difference(args, fast, batches[0], record)
        print(f"  bf16 vs fp32: largest probability difference {difference:.2e}", flush=True)
        threads = measure_scoring(args, budget, rows, batches, prepared, record, work,
                                  goals[2] if goals else None)
    if with_ray:
        import ray

        ray.shutdown()
    report(args, fast, gpu_name, goals, rows, collectives, difference, threads, setup_s, budget)


def report(args, fast, gpu_name, goals, rows: list[Row], collectives: str, difference: float, threads: int,
           setup_s: float, budget: Budget) -> None:
    import torch

    value = {row.label: row.value for row in rows}
    shards = next((r.value for r in rows if r.label.startswith("training, prepared shards (pyarrow)")), None)
    mode = "torch.compile" if fast.compile else "eager"
    synthetic = value.get(f"training, synthetic tensors on the device, {mode}")  # the model alone, same mode
    input_alone = value.get("input path alone (pyarrow shards -> device)")
    # The input is the wall when it alone delivers about what the model consumes or less.
    input_bound = input_alone < 1.1 * synthetic if input_alone and synthetic else None
    score_maps = value.get("scoring, + fast all-class maps and boxes")
    score_plain = value.get("scoring, predictions only")
    ray_data = next((r.value for r in rows if r.label.startswith("training, prepared shards (Ray Data)")), None)
    meets = None
    if goals and shards is not None and score_maps is not None:
        meets = shards >= goals[1] and score_maps >= goals[2]
    print(f"\nGPU benchmark: {args.model} at {args.size} px on {gpu_name or f'CPU ({os.cpu_count()} cores)'}, "
          f"torch {torch.__version__}; {fast.describe()}")
    print(f"train batch {args.batch_size}, score batch {args.score_batch_size}, {threads} thread(s) per scorer")
    print_table(rows, goals)
    print(f"{'collectives in a nccl/gloo process group':<62}{collectives}")
    print(f"{'bf16 vs fp32, largest probability difference':<62}{difference:.2e}")
    if shards and synthetic and input_bound is not None:
        print(f"input is {'the' if input_bound else 'not the'} wall: the input path alone delivers "
              f"{input_alone / synthetic:.2f}x what the model ({mode}) consumes; training on shards runs at "
              f"{shards / synthetic:.0%} of synthetic tensors")
    if score_maps and score_plain:
        print(f"maps and boxes cost {score_plain / score_maps:.2f}x predictions only")
    if goals:
        print(f"{goals[0]} goals (>= {goals[1]:,} training, >= {goals[2]:,} scored images/s): "
              f"{'met' if meets else 'not met' if meets is False else 'not judged (a measure was skipped)'}")
    emit({"bench": "gpu", "device": fast.device.type, "gpu": gpu_name, "torch": torch.__version__,
          "ray": any(r.label.startswith("training, prepared shards (Ray Data)") for r in rows),
          "model": args.model, "size": args.size, "batch_size": args.batch_size,
          "score_batch_size": args.score_batch_size,
          "autocast": str(fast.autocast_dtype).replace("torch.", "") if fast.autocast_dtype else None,
          "channels_last": fast.channels_last, "compile": fast.compile,
          "train_synthetic_eager_ips": _round(value.get("training, synthetic tensors on the device, eager")),
          "train_synthetic_compiled_ips": _round(value.get("training, synthetic tensors on the device, torch.compile")),
          "train_shards_ips": _round(shards), "train_shards_ray_ips": _round(ray_data),
          "train_ray_train_ips": _round(value.get("training, Ray Train loop (1 worker, epoch 2)")),
          "input_only_ips": _round(input_alone), "input_bound": input_bound,
          "score_predictions_ips": _round(score_plain), "score_fast_cam_ips": _round(score_maps),
          "fast_maps_cost_vs_predictions": round(score_plain / score_maps, 2) if score_plain and score_maps else None,
          "score_threads_per_actor": threads, "collectives": collectives,
          "bf16_max_probability_difference": float(f"{difference:.3g}"),
          "goals": {"gpu": goals[0], "train_ips": goals[1], "score_ips": goals[2]} if goals else None,
          "meets_goals": meets, "skipped": [r.label for r in rows if r.value is None],
          "setup_s": round(setup_s, 1), "total_s": round(time.monotonic() - budget.started, 1)})


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


if __name__ == "__main__":
    main()
