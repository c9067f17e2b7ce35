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
from thorax_ray.synthetic.demo import DEMO_DATA, DEMO_IMAGES, DEMO_SIZE, ensure_demo_dataset


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEMO_DATA, help=f"dataset folder (default {DEMO_DATA}, generated if missing)")
    parser.add_argument("--images", type=int, default=DEMO_IMAGES)
    parser.add_argument("--size", type=int, default=DEMO_SIZE)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    started = time.monotonic()
    ensure_demo_dataset(args.data, images=args.images, size=args.size, seed=args.seed)
    manifest_path = os.path.join(args.data, "manifest.parquet")
    frame, summary = build_manifest(args.data)
    write_manifest(frame, manifest_path, summary)
    print(summary.format())
    print(f"[demo] manifest: {manifest_path}")
    print(f"[demo] done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
