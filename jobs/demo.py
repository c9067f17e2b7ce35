"""The main job on the embedded default: a synthetic NIH-layout dataset generated on first use
(data/demo), validated into a manifest, then the later pipeline stages.

    python jobs/demo.py [--data data/demo] [--images 2000] [--size 256]
"""
from __future__ import annotations

import argparse
import os
import time

from thorax_ray.cli import run_main, setup_logging
from thorax_ray.manifest import build_manifest, write_manifest
from thorax_ray.synthetic.dataset import SyntheticConfig, write_preview, write_synthetic_dataset

DEMO_DATA = "data/demo"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEMO_DATA, help=f"dataset folder (default {DEMO_DATA}, generated if missing)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def ensure_dataset(args: argparse.Namespace) -> None:
    marker = os.path.join(args.data, "Data_Entry_2017.csv")
    if os.path.exists(marker):
        print(f"[demo] using the synthetic dataset in {args.data}")
        return
    print(f"[demo] generating {args.images} synthetic images of {args.size} px in {args.data} (first run only)")
    config = SyntheticConfig(out=args.data, images=args.images, size=args.size, seed=args.seed)
    population = write_synthetic_dataset(config)
    write_preview(config, population, os.path.join(args.data, "preview.png"))
    print(f"[demo] contact sheet: {os.path.join(args.data, 'preview.png')}")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    started = time.monotonic()
    ensure_dataset(args)
    manifest_path = os.path.join(args.data, "manifest.parquet")
    frame, summary = build_manifest(args.data)
    write_manifest(frame, manifest_path, summary)
    print(summary.format())
    print(f"[demo] manifest: {manifest_path}")
    print(f"[demo] done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
