"""Connecting to Ray. A job joins a cluster when told so (`--address`, or RAY_ADDRESS, which `ray job
submit` sets for the jobs it runs; `--address auto` joins the cluster `ray start` runs on this machine);
otherwise it starts a private local Ray, never attaching by accident to another one on the machine.

Authentication: Ray's token authentication is left on. A cluster started with `RAY_AUTH_MODE=token` (the
runbook's `ray start`) is joined with the token of this environment (`RAY_AUTH_TOKEN`, or the file
`~/.ray/auth_token`, or `RAY_AUTH_TOKEN_PATH`), as Ray itself reads it. A private local Ray gets a fresh
random token of its own (environment variables inherited by its processes, never written to disk): Ray's
servers listen on every interface and Ray has no setting to bind them to 127.0.0.1, so the token is what
keeps other machines out while the job runs.
"""
from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading

from thorax_ray.ray_settings import DATA_PROGRESS_NOTICE, GCS_PORT_ENV

# A local Ray advertises this many logical CPUs beyond the machine's cores, so that the Ray Data
# pipeline (readers/decoders) can run beside training workers that each hold one CPU; otherwise a
# 2-worker run on a 2-core machine leaves no CPU for the data tasks and waits forever.
LOCAL_EXTRA_CPUS = 2
AUTH_MODE_ENV, AUTH_TOKEN_ENV = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"


def use_private_token() -> None:
    """Token authentication with a new random token for the private Ray about to start: the token goes into
    RAY_AUTH_TOKEN (inherited by the Ray processes this one starts) and RAY_AUTH_MODE is left to Ray, which
    turns token mode on for a new local cluster (it must do so itself: it reads the mode once per process)."""
    os.environ.pop(AUTH_MODE_ENV, None)
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    os.environ[AUTH_TOKEN_ENV] = secrets.token_hex(32)


def init_ray(address: str | None = None, *, verbose: bool = False, extra_cpus: int = LOCAL_EXTRA_CPUS,
             **kwargs) -> bool:
    """Connects to Ray (see the module docstring); returns True when it started a private local Ray, which
    advertises the machine's cores plus `extra_cpus` (LOCAL_EXTRA_CPUS for training's data tasks; the scoring
    job asks for none: its actors and read tasks fit the cores, and every logical CPU beyond them is another
    worker process Ray may start at once).

    Unless `verbose`, Ray stays off the console: its workers' output (per-rank report lines, progress bars
    of the training workers' data iterators) is not forwarded to the driver, its driver-side progress bars
    and INFO lines are off; the jobs print one progress line per stage and one line per epoch themselves
    (thorax_ray.progress, train.train). Everything is still in Ray's log folder
    (/tmp/ray/session_latest/logs)."""
    import ray  # deferred: Ray (absent on the GPU machine)

    if ray.is_initialized():
        return False
    kwargs.setdefault("log_to_driver", verbose)
    if not verbose:
        kwargs.setdefault("logging_level", logging.ERROR)  # start-up chatter (the token notice, "Started ...")
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # Ray's forwarded warnings (raylet) without ANSI colours
    address = address or os.environ.get("RAY_ADDRESS")
    local = address is None
    if local:
        use_private_token()
        kwargs.setdefault("num_cpus", (os.cpu_count() or 1) + extra_cpus)
        kwargs.setdefault("dashboard_host", "127.0.0.1")
        kwargs["runtime_env"] = _with_own_address(kwargs.get("runtime_env"))
        address = "local"
    handlers = _python_signal_handlers()
    try:
        ray.init(address=address, **kwargs)
        _restore(handlers)  # Ray's core installs a C handler that aborts on SIGTERM; the job's own comes first
    finally:
        os.environ.pop(GCS_PORT_ENV, None)
    context = ray.data.DataContext.get_current()
    # Parquet through Ray Data's V1 reader: the V2 reader (Ray 2.60's default) reads footers on 32 actors per
    # read_parquet call, each a worker process that asks for a CPU of any node type. On 2 cores they outnumber
    # what the machine runs (Ray's "N PYTHON worker processes" warning, "no available CPUs" while they
    # linger); on a cluster their demand makes the autoscaler start nodes of other types. V1 reads with tasks
    # that carry the job's node role (thorax_ray.data.shards.read_prepared).
    context.use_datasource_v2 = False
    context.enable_progress_bars = verbose
    context.print_on_execution_start = verbose
    if not verbose:
        quiet_ray_logs()
    return local


def quiet_ray_logs() -> None:
    """Ray's driver-side loggers from WARNING up (Ray Data logs every execution at INFO), without the notice
    that its progress bars are off (the jobs print their own progress lines): Ray Data shows it once per
    process (`log_once`), so that once is spent here."""
    from ray.util.debug import log_once  # deferred: Ray (absent on the GPU machine)

    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    log_once(DATA_PROGRESS_NOTICE)
    for handler in logging.getLogger("ray.data").handlers:  # Ray Data's console handler; its log file keeps all
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            if not any(isinstance(f, BelowErrors) for f in handler.filters):
                handler.addFilter(BelowErrors())


class BelowErrors(logging.Filter):
    """Keeps Ray Data's ERROR records off the console: it logs a failed execution (the failing task's
    traceback, the error, "Full stack trace: ...") before it re-raises the error, and the job's own line comes
    from the re-raised error (thorax_ray.cli.run_main, or Python's traceback when the job does not know it).
    They stay in Ray Data's log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


def _python_signal_handlers() -> dict:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)
            if callable(signal.getsignal(signum))}


def _restore(handlers: dict) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def _with_own_address(runtime_env: dict | None) -> dict:
    """The job's runtime environment plus RAY_ADDRESS of the private Ray about to start (its GCS port chosen
    here and handed to Ray through RAY_GCS_SERVER_PORT). Ray processes that look the cluster up by
    "auto" (Ray Train's placement-group cleaner uses the State API so) then find this one even when other
    Ray instances run on the machine, instead of failing with "Found multiple active Ray instances"."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ[GCS_PORT_ENV] = str(port)
    runtime_env = dict(runtime_env or {})
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), "RAY_ADDRESS": f"127.0.0.1:{port}"}
    return runtime_env
