"""Ingest benchmark: images/s of (a) the CheXNet-style PyTorch DataLoader (PIL open, RGB, resize,
to tensor, normalise; num_workers = cores), (b) this project's Ray Data PNG path and (c) reading
the prepared Parquet shards, on the same N synthetic 1024x1024 PNGs, in one run.

    python bench/ingest.py [--images 2000] [--size 224]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import PeakMemory, emit, timed  # noqa: E402


def baseline_dataloader(paths: list[str], size: int, workers: int, batch_size: int) -> int:
    """What the CheXNet reimplementations do."""
    import torch
    from PIL import Image
    from torchvision import transforms

    transform = transforms.Compose([
        transforms.Resize((size, size)), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])

    class PngDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            return transform(Image.open(paths[i]).convert("RGB"))

    loader = torch.utils.data.DataLoader(PngDataset(), batch_size=batch_size, num_workers=workers)
    return sum(len(batch) for batch in loader)


def ray_png_path(manifest, size: int, batch_size: int) -> int:
    from thorax_ray.data.pipeline import ImageConfig, images_to_array, load_images

    ds = load_images(manifest, ImageConfig(size=size, batch_size=batch_size))
    count = 0
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="pandas"):
        count += len(images_to_array(batch["image"].tolist(), size))
    return count


def shard_path(root: str, size: int, batch_size: int) -> int:
    from thorax_ray.data.pipeline import images_to_array
    from thorax_ray.data.shards import read_prepared

    ds = read_prepared(root, columns=["image", "image_index", "split"])
    count = 0
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
        count += len(images_to_array(batch["image"], size))
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", default="data/bench-ingest", help="where the 1024 px PNGs are kept between runs")
    args = parser.parse_args()
    cores = os.cpu_count() or 1

    from thorax_ray.data.manifest import build_manifest
    from thorax_ray.synthetic.dataset import SyntheticConfig, write_synthetic_dataset

    data = f"{args.data}-{args.images}"
    if not os.path.exists(os.path.join(data, "Data_Entry_2017.csv")):
        print(f"generating {args.images} synthetic 1024x1024 PNGs in {data} (kept for later runs)")
        write_synthetic_dataset(SyntheticConfig(out=data, images=args.images, size=1024, seed=7))
    manifest, _ = build_manifest(data)
    paths = manifest["path"].tolist()

    import ray

    ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False

    # One untimed pass over a small slice first: Ray's worker processes (like the DataLoader's) start once
    # and stay for every later epoch, so steady-state throughput is what an epoch sees.
    warm = manifest.head(64)
    baseline_dataloader(warm["path"].tolist(), args.size, cores, args.batch_size)
    ray_png_path(warm, args.size, args.batch_size)

    results = {}
    with PeakMemory() as memory:
        count, seconds = timed(lambda: baseline_dataloader(paths, args.size, cores, args.batch_size))
    results["dataloader"] = (count, seconds, memory.peak_mb)
    with PeakMemory() as memory:
        count, seconds = timed(lambda: ray_png_path(manifest, args.size, args.batch_size))
    results["ray_png"] = (count, seconds, memory.peak_mb)

    from thorax_ray.data.pipeline import ImageConfig
    from thorax_ray.data.prepare import PrepareConfig, prepare

    with tempfile.TemporaryDirectory() as out:
        summary, prepare_s = timed(lambda: prepare(PrepareConfig(data=data, out=out, image=ImageConfig(size=args.size))))
        shard_path(out, args.size, args.batch_size)  # warm-up pass, untimed
        with PeakMemory() as memory:
            count, seconds = timed(lambda: shard_path(out, args.size, args.batch_size))
        results["shards"] = (count, seconds, memory.peak_mb)
    ray.shutdown()

    base_rate = results["dataloader"][0] / results["dataloader"][1]
    print(f"\n{args.images} PNGs of 1024x1024 -> {args.size}px, {cores} cores, batch {args.batch_size}")
    print(f"{'path':<34}{'images':>8}{'seconds':>9}{'images/s':>10}{'vs (a)':>8}{'peak MB':>9}")
    names = {"dataloader": "(a) PyTorch DataLoader (CheXNet)", "ray_png": "(b) Ray Data PNG path",
             "shards": "(c) prepared Parquet shards"}
    for key, (count, seconds, peak) in results.items():
        rate = count / seconds
        print(f"{names[key]:<34}{count:>8}{seconds:>9.2f}{rate:>10.1f}{rate / base_rate:>8.2f}{peak:>9.0f}")
    print(f"(prepare pass itself: {prepare_s:.1f} s, {args.images / prepare_s:.1f} images/s)")
    rate = {k: v[0] / v[1] for k, v in results.items()}
    emit({"bench": "ingest", "images": args.images, "size": args.size, "cores": cores,
          "dataloader_images_s": round(rate["dataloader"], 1), "ray_png_images_s": round(rate["ray_png"], 1),
          "shards_images_s": round(rate["shards"], 1),
          "ratio_ray_png": round(rate["ray_png"] / rate["dataloader"], 2),
          "ratio_shards": round(rate["shards"] / rate["dataloader"], 2),
          "peak_mb": {k: round(v[2]) for k, v in results.items()}})


if __name__ == "__main__":
    main()
