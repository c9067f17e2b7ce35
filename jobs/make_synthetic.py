"""Generate a synthetic ChestX-ray14 dataset in the exact NIH/Kaggle layout.

    python jobs/make_synthetic.py --out data/synthetic --images 2000 --size 512 --seed 0 [--preview sheet.png]
"""
from __future__ import annotations

import argparse
import time

from thorax_ray.cli import run_main, setup_logging
from thorax_ray.synthetic.dataset import SyntheticConfig, write_preview, write_synthetic_dataset


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--images", type=int, default=2000, help="number of images (default 2000)")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (default 1024, as the real set)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", type=float, default=1.0,
                        help="0 = obvious findings, 1 = default (a good CNN is not perfect), 2 = very subtle")
    parser.add_argument("--workers", type=int, default=0, help="processes (default: one per core)")
    parser.add_argument("--metadata-only", action="store_true", help="write CSVs and split lists but no images")
    parser.add_argument("--preview", metavar="FILE.png", help="also write a contact sheet of 16 images with labels and boxes")
    args = parser.parse_args(argv)
    if args.images < 1 or not 32 <= args.size <= 4096:
        parser.error("--images must be >= 1 and --size between 32 and 4096")
    return args


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    started = time.monotonic()
    config = SyntheticConfig(out=args.out, images=args.images, size=args.size, seed=args.seed,
                             difficulty=args.difficulty, workers=args.workers, metadata_only=args.metadata_only)
    population = write_synthetic_dataset(config)
    elapsed = time.monotonic() - started
    print(f"wrote {len(population)} images of {population['patient_id'].nunique()} patients to {args.out} "
          f"in {elapsed:.1f} s ({len(population) / elapsed:.0f} images/s)")
    if args.preview:
        write_preview(config, population, args.preview)
        print(f"preview: {args.preview}")
    return 0


if __name__ == "__main__":
    run_main(main)
