"""Shared command-line plumbing for the jobs: logging set-up, flags whose defaults are their config
dataclass's (see `show_config_defaults`, `thorax_ray.config_io.config_from_flags`) and friendly failure on
known errors."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing
from collections.abc import Callable
from typing import Any

from thorax_ray import console, exit_codes
from thorax_ray.cluster import USE_GPU_CHOICES
from thorax_ray.config_io import FlagTable, flag_target
from thorax_ray.interrupts import as_interrupted, interruptible
from thorax_ray.lease import LeaseBusy, LeaseLost
from thorax_ray.storage_errors import storage_failure


def setup_logging(verbose: bool = False) -> None:
    """thorax_ray's own INFO lines (what a stage is doing) on the console; other libraries' only from
    WARNING up, or everything at DEBUG with --verbose."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else "%(message)s",
                        datefmt="%H:%M:%S", force=True)
    logging.getLogger("thorax_ray").setLevel(logging.DEBUG if verbose else logging.INFO)


UNCOMMITTED = "nothing of this run was committed and what it had staged was removed; committed outputs are as they were"
RUN_LATER = "run again later"


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None, *,
             on_interrupt: str = UNCOMMITTED, on_busy: str = RUN_LATER) -> None:
    """Runs a job's main: a ValueError/FileNotFoundError (bad input) ends with one clear line and exit 2 (or
    the error's `exit_code`, e.g. 75 when the cluster could not place the job in time);
    a storage request that still failed after the retry budget ends with one line naming the operation and
    the key, exit 75 (5xx, throttling: try again later) or 1 (the store refused; thorax_ray.storage_errors);
    an output whose lease another run holds (LeaseBusy) ends with one line naming the holder and `on_busy`,
    exit 75; a run whose lease another run took over before its commit (LeaseLost) with one line saying it
    committed nothing, exit 75; a GPU node that cannot run CUDA (node_check.CudaUnusable, raised in a worker or
    actor) with its one line naming the node, exit 69;
    Ctrl-C or SIGTERM (see thorax_ray.interrupts) unwinds the job (its `finally`/`except BaseException`
    clean-ups run, the private Ray stops with the process), prints one line saying so and exits 130/143."""
    with interruptible():
        try:
            sys.exit(main(argv))
        except KeyboardInterrupt as error:  # Interrupted, or what Ray's blocking calls make of it
            stop = as_interrupted(error)
            console.error(f"interrupted ({stop.name}): {on_interrupt}")
            sys.exit(stop.exit_code)
        except (ValueError, FileNotFoundError) as error:
            console.error(f"error: {error}")
            sys.exit(getattr(error, "exit_code", exit_codes.BAD_INPUT))  # or the error's own (75: try again later)
        except Exception as error:  # storage that failed for good, or the output's lease: one line, exit 75 or 1
            line, code = _known_failure(error, on_busy)
            if line is None:
                raise
            console.error(line)
            sys.exit(code)


def _known_failure(error: Exception, on_busy: str) -> tuple[str | None, int]:
    """The line and exit code run_main ends with for `error`, or (None, 0) when it is not a known failure."""
    failure = storage_failure(error)  # first: a lease request that failed for good is named as a storage request
    if failure is not None:
        return failure.line(), failure.exit_code
    if isinstance(error, LeaseBusy):
        return f"error: not started: {error}; {on_busy}", exit_codes.TEMPFAIL
    if isinstance(error, LeaseLost):
        return f"error: {error} (nothing of this run was committed)", exit_codes.TEMPFAIL
    unusable = cuda_unusable_line(error)
    if unusable is not None:
        return f"error: {unusable}", exit_codes.NODE_UNUSABLE
    return None, 0

CUDA_UNUSABLE = "CudaUnusable: "  # how Ray's error text quotes thorax_ray.node_check.CudaUnusable from a worker


def cuda_unusable_line(error: BaseException) -> str | None:
    """The one line of a node_check.CudaUnusable raised in a training worker or scoring actor, from the error
    that reached the driver (Ray wraps it in its own errors and tracebacks, as text), else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__name__ == "CudaUnusable":
            return str(error).splitlines()[0]
        text = str(error)
        if CUDA_UNUSABLE in text:
            return text.split(CUDA_UNUSABLE, 1)[1].splitlines()[0].strip()
        error = error.__cause__ or error.__context__
    return None


def add_split_arguments(parser, kinds: tuple[str, ...]) -> None:
    """--val-fraction, --test-fraction, --split (one of `kinds`, data.splits.SPLIT_KINDS) and --split-seed: how a
    dataset's patients are split (SplitConfig)."""
    parser.add_argument("--val-fraction", type=float,
                        help="share of patients for validation (training needs at least one)")
    parser.add_argument("--test-fraction", type=float,
                        help="share of patients for test in a random split (no test_list.txt, or --split random)")
    parser.add_argument("--split", choices=kinds,
                        help="official: NIH's train_val_list.txt/test_list.txt when present (else random); random: "
                             "a random patient split with --val-fraction/--test-fraction/--split-seed even when "
                             "the lists are present (CheXNet: 0.1/0.2)")
    parser.add_argument("--split-seed", type=int, help="seed of the patient split")


def add_s3_endpoint_argument(parser) -> None:
    parser.add_argument("--s3-endpoint", help="endpoint of an S3-compatible store (default: AWS_ENDPOINT_URL)")


def add_cluster_arguments(parser) -> None:
    """--s3-endpoint, --address and --verbose, shared by every job that runs on Ray."""
    add_s3_endpoint_argument(parser)
    parser.add_argument("--verbose", action="store_true",
                        help="Ray's own output on the console too (workers' logs and report lines, progress bars) "
                             "and DEBUG logging; it is always in Ray's log folder")
    parser.add_argument("--address", help="Ray cluster to join ('auto': the one `ray start` runs here; default: "
                                          "RAY_ADDRESS, set for jobs run by `ray job submit`, else a new local Ray)")


def add_gpu_arguments(parser, per_unit: str) -> None:
    """--use-gpu plus the placement arguments, for the jobs that place work on GPUs."""
    parser.add_argument("--use-gpu", choices=USE_GPU_CHOICES,
                        help=f"{per_unit}: auto (default) = when the cluster has GPUs or its autoscaler can launch "
                             "GPU nodes; true = GPUs, failing at once if the cluster can never provide them; false = CPUs")
    add_placement_arguments(parser)


def add_placement_arguments(parser) -> None:
    """--cluster-config and --shared-fs: what the cluster can launch, and whether local paths are shared."""
    parser.add_argument("--cluster-config", help="the autoscaler's cluster config, to see node types that are not up "
                                                 "yet (default: $THORAX_CLUSTER_CONFIG, else ~/ray_bootstrap_config.yaml)")
    parser.add_argument("--shared-fs", action="store_true", default=None,
                        help="local paths are on a filesystem every node mounts (NFS, EFS); otherwise a multi-node "
                             "cluster needs s3:// storage (default: off; train and tune: the config's run.shared_fs)")
    parser.add_argument("--placement-timeout", type=non_negative_float, metavar="SECONDS",
                        help="give up with exit 75 when the cluster has not placed the job's workers/actors after "
                             "this long (the autoscaler cannot launch the nodes); while waiting, a line per minute says "
                             "what for; 0: wait for ever (default: 300; train and tune: the config's "
                             "run.placement_timeout_s)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The job's docstring as written, and every option's default after its help. An option whose
    default is None (a flag that only overrides a config, or one whose default is computed) shows what
    its help says: `(default: ...)` written there, or added from the config by `show_config_defaults`."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if "(default" in help_text or action.default is None:
            return help_text
        return super()._get_help_string(action)


class JobArgumentParser(argparse.ArgumentParser):
    """A usage error is one line on stderr (and exit 2), like every other bad-input error of a job."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def job_parser(description: str | None) -> JobArgumentParser:
    """The argument parser of a job: its docstring as description, defaults shown, one-line errors."""
    return JobArgumentParser(description=description, formatter_class=HelpFormatter)


def field_default(cls: type, path: str) -> Any:
    """The default of the field at dotted `path` (`image.size`) of config dataclass `cls`, read from
    `dataclasses.fields` (a class with required fields has no instance to read it from); MISSING when
    the field has none (a required field)."""
    *sections, name = path.split(".")
    for section in sections:
        cls = typing.get_type_hints(cls)[section]
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def show_config_defaults(parser: argparse.ArgumentParser, flags: FlagTable, config_cls: type) -> None:
    """Appends `(default: V)` to the help of every flag of `flags` (the job's table for
    `thorax_ray.config_io.config_from_flags` / `overrides_from_flags`) whose argparse default is None and
    whose help states no default, V being the field's default in `config_cls`: the default is stated
    once, in the dataclass (a required field shows none)."""
    for action in parser._actions:
        if action.dest in flags and action.default is None and "(default" not in (action.help or ""):
            value = field_default(config_cls, flag_target(flags[action.dest]).field)
            if value is dataclasses.MISSING:
                continue
            value = "none" if value is None else str(value).replace("%", "%%")
            action.help = f"{action.help or ''} (default: {value})".lstrip()


def checked_by(parse: Callable[[str], Any]) -> Callable[[str], str]:
    """An argparse `type` for a flag whose parsed value may be None (`--overlay-threshold none`), which
    would read as not given: `parse` rejects a bad value with its usual usage error, the text is kept,
    and the flag table's `Flag(path, parse)` makes the field's value of it."""
    def check(text: str) -> str:
        parse(text)
        return text
    check.__name__ = parse.__name__  # argparse names it in "invalid <name> value"
    return check


def zero_means_none(value):
    """A flag's converter (`Flag(path, zero_means_none)`): 0 given on the command line is the field's None."""
    return value or None


def _bounded(kind: type, low, inclusive: bool):
    """An argparse `type` that parses `kind` and rejects values below `low` (or equal, unless inclusive)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if value < low or (value == low and not inclusive) or value != value:
            raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {low}, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


positive_int = _bounded(int, 1, inclusive=True)
non_negative_int = _bounded(int, 0, inclusive=True)
positive_float = _bounded(float, 0.0, inclusive=False)
non_negative_float = _bounded(float, 0.0, inclusive=True)
