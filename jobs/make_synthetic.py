"""Generate a synthetic ChestX-ray14 dataset in the exact NIH/Kaggle layout.

    python jobs/make_synthetic.py --out data/synthetic --images 2000 --size 512 --seed 0 [--preview sheet.png]

The dataset is written beside --out and renamed into place when complete, so --out holds a whole
dataset or nothing; Ctrl-C (or SIGTERM) stops the worker processes and removes what was written.
--out must be new, empty, or a complete dataset generated with the same settings (then kept as it is).
"""
from __future__ import annotations

import argparse
import sys
import time

from thorax_ray.cli import job_parser, non_negative_int, run_main, setup_logging, show_config_defaults
from thorax_ray.config_io import config_from_flags
from thorax_ray.interrupts import Interrupted, interruptible
from thorax_ray.synthetic.dataset import SyntheticConfig, recorded_settings, write_preview, write_synthetic_dataset

FLAGS = {  # flag -> SyntheticConfig field; every flag's default is the field's
    "out": "out", "images": "images", "size": "size", "seed": "seed", "difficulty": "difficulty",
    "workers": "workers", "metadata_only": "metadata_only",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = job_parser(__doc__)
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--images", type=int, help="number of images")
    parser.add_argument("--size", type=int, help="image side in pixels (1024 as the real set)")
    parser.add_argument("--seed", type=int, help="random seed (same seed, same files)")
    parser.add_argument("--difficulty", type=float,
                        help="0 = obvious findings, 1 = NIH-like (a good CNN is not perfect), 2 = very subtle; max 3")
    parser.add_argument("--workers", type=non_negative_int, help="processes (0: one per core)")
    parser.add_argument("--metadata-only", action="store_true", default=None,
                        help="write CSVs and split lists but no images")
    parser.add_argument("--preview", metavar="FILE.png",
                        help="also write a contact sheet of 16 images with labels and boxes (default: none)")
    show_config_defaults(parser, FLAGS, SyntheticConfig)
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> SyntheticConfig:
    return config_from_flags(SyntheticConfig, args, FLAGS)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    started = time.monotonic()
    config = build_config(args)
    if recorded_settings(args.out) == config.settings():
        print(f"{args.out} already holds a complete synthetic dataset with these settings; nothing to do")
        return 0
    with interruptible():
        try:
            population = write_synthetic_dataset(config)
        except Interrupted as stop:
            print(f"interrupted ({stop.name}): stopped the workers and removed the partial dataset; "
                  f"{args.out} is as it was", file=sys.stderr)
            return stop.exit_code
    elapsed = time.monotonic() - started
    print(f"wrote {len(population)} images of {population['patient_id'].nunique()} patients to {args.out} "
          f"in {elapsed:.1f} s ({len(population) / elapsed:.0f} images/s)")
    if args.preview:
        write_preview(config, population, args.preview)
        print(f"preview: {args.preview}")
    return 0


if __name__ == "__main__":
    run_main(main)
