"""Upkeep of a scoring output's Delta tables (OUT/scores, OUT/quarantine); needs no Ray.

    python jobs/maintain_scores.py --out s3://bucket/scores --optimize --vacuum-hours 168   # e.g. weekly
    python jobs/maintain_scores.py --out data/scores --migrate      # an output written before the Delta tables

--optimize compacts each batch_date's small nightly files into few (a Delta OPTIMIZE commit: no row changes);
--vacuum-hours N deletes the files the tables no longer list (replaced by compaction, or left by killed runs)
that are older than N hours (default retention: Delta's 168; 0 deletes them all, and readers of older
snapshots lose their files); --migrate moves runs of the old layout (OUT/_commits/) into the tables. Holds
OUT's lease, so it waits for (--lock-wait-s) or refuses to run beside a scoring run (exit 75).
"""
from __future__ import annotations

import argparse

from thorax_ray import console
from thorax_ray.cli import add_s3_endpoint_argument, job_parser, run_main, setup_logging
from thorax_ray.preflight import require_inputs
from thorax_ray.scoring.maintain import compact, maintenance_lease, migrate, open_tables, vacuum


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = job_parser(__doc__)
    parser.add_argument("--out", required=True, help="the scoring output (folder or s3:// prefix), as given to score")
    parser.add_argument("--optimize", action="store_true", help="compact the small files of each batch_date")
    parser.add_argument("--target-mb", type=int, default=256, help="the size compacted files aim at")
    parser.add_argument("--vacuum-hours", type=float, metavar="N",
                        help="delete files the tables no longer list that are older than N hours (default: none, "
                             "no vacuum)")
    parser.add_argument("--migrate", action="store_true", help="move old-layout runs (OUT/_commits/) into the tables")
    parser.add_argument("--lock-wait-s", type=float, default=0.0, help="how long to wait for a scoring run's lease")
    parser.add_argument("--verbose", action="store_true", help="DEBUG logging")
    add_s3_endpoint_argument(parser)
    args = parser.parse_args(argv)
    if not (args.optimize or args.migrate or args.vacuum_hours is not None):
        parser.error("nothing to do: give --optimize, --vacuum-hours N and/or --migrate")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    endpoint = args.s3_endpoint
    require_inputs({"--out": args.out}, endpoint_url=endpoint)  # a mistyped output: one line, before its lease
    with maintenance_lease(args.out, wait_s=args.lock_wait_s, endpoint_url=endpoint):
        if args.migrate:
            moved = migrate(args.out, endpoint_url=endpoint)
            console.say("maintain", f"{len(moved)} old-layout run(s) moved into the tables")
        tables = open_tables(args.out, endpoint_url=endpoint)  # read once: compact and vacuum work on them
        if not tables:
            raise ValueError(f"--out {args.out}: no scores or quarantine table there (OUT/scores/_delta_log): "
                             "nothing to maintain")
        if args.optimize:
            for done in compact(args.out, target_mb=args.target_mb, endpoint_url=endpoint, tables=tables):
                console.say("maintain", f"{done.table}: {done.files_before} file(s) compacted into {done.files_after}")
        if args.vacuum_hours is not None:
            for done in vacuum(args.out, retention_hours=args.vacuum_hours, endpoint_url=endpoint, tables=tables):
                console.say("maintain", f"{done.table}: {done.removed} file(s) no longer in the table deleted")
    return 0


if __name__ == "__main__":
    run_main(main)
