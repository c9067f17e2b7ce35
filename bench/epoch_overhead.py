"""Per-epoch fixed cost of this project's Ray Train loop: for 1 and 2 workers, each epoch's wall time split
into training (the loop over this epoch's batches), validation (scoring the validation rows, gathered)
and the rest (the overhead: loss reduction, metrics, checkpoint save/report, Ray Train's barrier, dataset
start), from the run's metrics.json.

    python bench/epoch_overhead.py                        # small CNN on a demo-like prepared set
    python bench/epoch_overhead.py --data data/demo-prepared --epochs 4

The first epoch (warm-up: dataset caching, compile) is reported but not counted in the means.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import emit  # noqa: E402


def run(prepared: str, storage: str, workers: int, args) -> list[dict]:
    from thorax_ray.train.config import TrainConfig
    from thorax_ray.train.train import fit

    config = TrainConfig.from_dict({
        "data": {"data": prepared, "size": args.size, "batch_size": args.batch_size},
        "model": {"name": args.model}, "optim": {"epochs": args.epochs, "scheduler": "none"},
        "run": {"storage": storage, "name": f"overhead-{workers}", "workers": workers, "cpus_per_worker": 1.0},
    })
    result = fit(config)
    history = result.metrics["history"]
    walls = checkpoint_walls(result.run_dir)
    rows = []
    for i, h in enumerate(history):
        # older versions recorded no wall time: the time between two epochs' checkpoint folders instead
        wall = h.get("wall_seconds") or walls.get(i) or h["seconds"]
        val = h.get("val_seconds", h["seconds"] - h["train_seconds"])
        rows.append({"epoch": h["epoch"], "wall_s": wall, "train_s": h["train_seconds"], "val_s": val,
                     "rest_s": wall - h["train_seconds"] - val})
    return rows


def checkpoint_walls(run_dir: str) -> dict[int, float]:
    """Epoch position -> seconds between its checkpoint folder and the previous one's (from the 2nd on)."""
    folders = sorted(os.path.join(run_dir, d) for d in os.listdir(run_dir) if d.startswith("epoch_"))
    times = [os.path.getmtime(f) for f in folders]
    return {i: times[i] - times[i - 1] for i in range(1, len(times))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="an existing prepared output (default: generate a demo-like one)")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=3000, help="images generated when --data is not given")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", default="1,2", help="worker counts to run (default 1,2)")
    args = parser.parse_args()

    from thorax_ray.data.pipeline import ImageConfig
    from thorax_ray.data.prepare import PrepareConfig, prepare
    from thorax_ray.ray_setup import init_ray
    from thorax_ray.synthetic.dataset import SyntheticConfig, write_synthetic_dataset

    init_ray()
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    results = {}
    with tempfile.TemporaryDirectory() as work:
        prepared = args.data
        if prepared is None:
            write_synthetic_dataset(SyntheticConfig(out=f"{work}/raw", images=args.images, size=args.size * 2,
                                                    seed=3, difficulty=0.0), progress=False)
            prepared = f"{work}/prepared"
            prepare(PrepareConfig(data=f"{work}/raw", out=prepared, image=ImageConfig(size=args.size)))
        for workers in [int(w) for w in args.workers.split(",")]:
            results[workers] = run(prepared, f"{work}/runs", workers, args)
    ray.shutdown()

    print(f"\n{args.model} at {args.size} px, batch {args.batch_size} per worker, {args.epochs} epochs "
          f"(epoch 1 is warm-up, not in the means)")
    print(f"{'workers':>7} {'epoch':>5} {'wall s':>8} {'train s':>8} {'val s':>7} {'rest s':>7} {'rest %':>7}")
    summary = {}
    for workers, rows in results.items():
        for row in rows:
            print(f"{workers:>7} {row['epoch']:>5} {row['wall_s']:>8.2f} {row['train_s']:>8.2f} {row['val_s']:>7.2f} "
                  f"{row['rest_s']:>7.2f} {100 * row['rest_s'] / row['wall_s']:>6.1f}%")
        timed = rows[1:] or rows
        mean = {k: sum(r[k] for r in timed) / len(timed) for k in ("wall_s", "train_s", "val_s", "rest_s")}
        summary[workers] = {k: round(v, 3) for k, v in mean.items()} | {
            "rest_fraction": round(mean["rest_s"] / mean["wall_s"], 3)}
        print(f"{workers:>7} {'mean':>5} {mean['wall_s']:>8.2f} {mean['train_s']:>8.2f} {mean['val_s']:>7.2f} "
              f"{mean['rest_s']:>7.2f} {100 * mean['rest_s'] / mean['wall_s']:>6.1f}%")
    emit({"bench": "epoch_overhead", "model": args.model, "size": args.size, "batch_size": args.batch_size,
          "epochs": args.epochs, "per_workers": summary})


if __name__ == "__main__":
    main()
