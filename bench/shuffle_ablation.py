"""What per-epoch shuffling alone changes: the same model, data, seed and epochs trained twice on raw PNGs,
once as the trainer does it (rows in a seeded random order, block order reseeded every epoch, a local
shuffle buffer seeded per epoch and rank) and once in the order training used before shuffling existed
(the metadata CSV's order, sorted by patient and follow-up, the same every epoch, no buffer). Prints the
validation mean AUROC per epoch of both and their difference (shuffled - CSV order) at the end.

    python bench/shuffle_ablation.py --data DIR [--epochs 8] [--size 64] [--seeds 0,1]

DIR: a dataset folder (NIH layout), e.g. from `jobs/make_synthetic.py --images 3000 --size 64 --difficulty 0`.
The CSV-order arm sets the training config's `data.shuffle` to false (no seeded row order, no per-epoch block
order, no shuffle buffer); the model, loss, learning-rate schedule and validation rows are the same in both arms.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import emit  # noqa: E402


def train_once(args, seed: int, shuffled: bool, storage_dir: str) -> list[float]:
    from thorax_ray.checkpoint import run_metrics
    from thorax_ray.train.config import TrainConfig
    from thorax_ray.train.train import fit

    name = f"{'shuffled' if shuffled else 'csv_order'}-seed{seed}"
    config = TrainConfig.from_dict({
        "data": {"data": args.data, "size": args.size, "batch_size": args.batch_size,
                 "shuffle": shuffled},
        "model": {"name": args.model}, "optim": {"epochs": args.epochs, "lr": 2e-3, "scheduler": "cosine"},
        "run": {"storage": storage_dir, "name": name, "workers": args.workers, "seed": seed},
    })
    result = fit(config, progress=False)
    if result.error:
        raise RuntimeError(f"{name}: {result.error}")
    history = run_metrics(os.path.join(storage_dir, name))["history"]
    curve = [epoch["val"]["mean_auroc"] for epoch in history]
    if None in curve:
        raise SystemExit(f"{args.data}: no finding has both positive and negative validation rows, so there is no "
                         "validation AUROC to compare; use a larger dataset (more --images)")
    return curve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder (raw PNGs in the NIH layout)")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", default="0", help="comma-separated run seeds; each trains both arms")
    args = parser.parse_args(argv)

    from thorax_ray.ray_setup import init_ray

    init_ray()
    differences = []
    with tempfile.TemporaryDirectory(prefix="shuffle-ablation-") as storage_dir:
        for seed in (int(s) for s in args.seeds.split(",")):
            started = time.monotonic()
            curves = {arm: train_once(args, seed, arm == "shuffled", storage_dir) for arm in ("shuffled", "csv_order")}
            for arm, curve in curves.items():
                print(f"seed {seed} {arm:9s} val mean AUROC by epoch: " + " ".join(f"{v:.3f}" for v in curve))
            final = curves["shuffled"][-1] - curves["csv_order"][-1]
            best = max(curves["shuffled"]) - max(curves["csv_order"])
            differences.append((final, best))
            print(f"seed {seed}: shuffled - CSV order: final {final:+.3f}, best {best:+.3f} "
                  f"({time.monotonic() - started:.0f} s)", flush=True)
    mean_final = sum(d[0] for d in differences) / len(differences)
    mean_best = sum(d[1] for d in differences) / len(differences)
    print(f"shuffling alone, {args.model} {args.epochs} epochs, {len(differences)} seed(s): val mean AUROC "
          f"shuffled - CSV order = {mean_final:+.3f} final, {mean_best:+.3f} best epoch")
    emit({"bench": "shuffle_ablation", "model": args.model, "epochs": args.epochs, "seeds": args.seeds,
          "final_difference": round(mean_final, 4), "best_difference": round(mean_best, 4)})


if __name__ == "__main__":
    main()
