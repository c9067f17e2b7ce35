"""Drift and out-of-distribution monitoring of a scoring output, per night: prints a table (one line per
batch_date and model: runs, images, share of images out of distribution, largest PSI, drifted findings,
metadata sources) and writes a plot over time per model (PSI of each finding, out-of-distribution share).
Reads the records each scoring run writes after its commit (`OUT/monitoring/<run_id>.json`); needs no Ray.

    python jobs/monitor.py data/scores
    python jobs/monitor.py s3://bucket/scores --model-id 0123456789abcdef --plot drift.png

The plot goes to OUT/monitoring/nights-<model_id>.png unless --plot names a file (one model only).
"""
from __future__ import annotations

import argparse

from thorax_ray import console
from thorax_ray.cli import add_s3_endpoint_argument, job_parser, run_main, setup_logging
from thorax_ray.monitoring.report import default_plot_uri, format_table, nights, plot_nights
from thorax_ray.monitoring.run import read_run_records
from thorax_ray.preflight import require_inputs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = job_parser(__doc__)
    parser.add_argument("out", help="the scoring output (folder or s3:// prefix), as given to score --out")
    parser.add_argument("--model-id", help="only this model's runs (default: every model, one table each)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="where the plot goes (local or s3://; default: OUT/monitoring/nights-<model_id>.png)")
    parser.add_argument("--no-plot", action="store_true", help="print the table only")
    parser.add_argument("--verbose", action="store_true", help="DEBUG logging")
    add_s3_endpoint_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    require_inputs({"OUT": args.out}, endpoint_url=args.s3_endpoint)
    rows = nights(read_run_records(args.out, model_id=args.model_id, endpoint_url=args.s3_endpoint))
    models = list(dict.fromkeys(row.model_id for row in rows))
    if args.plot and len(models) > 1:
        raise ValueError(f"--plot names one file but {args.out} holds runs of {len(models)} models "
                         f"({', '.join(models)}); add --model-id")
    print(format_table(rows))
    if not args.no_plot:
        for model_id in models:
            path = plot_nights([row for row in rows if row.model_id == model_id],
                               args.plot or default_plot_uri(args.out, model_id), endpoint_url=args.s3_endpoint)
            console.say("monitor", f"plot {path}")
    return 0


if __name__ == "__main__":
    run_main(main)
