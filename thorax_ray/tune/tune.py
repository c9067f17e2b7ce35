"""Runs (or resumes) a Tune experiment over a `SearchSpace`: ASHA on the validation mean AUROC,
concurrency bounded by the CPUs and GPUs the cluster has or can launch, results written by
`thorax_ray.tune.results`."""
from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, replace

from thorax_ray import console, storage
from thorax_ray.cluster import (CPU_ROLE, TRAIN_ROLE, ClusterCapacity, check_shared_storage, cluster_capacity,
                                resolve_use_gpu)
from thorax_ray.placement import training_placement, wait_until_placed
from thorax_ray.ray_settings import TUNE_OUTPUT_ENV
from thorax_ray.train.config import TrainConfig
from thorax_ray.train.train import ray_storage
from thorax_ray.tune import results as results_mod
from thorax_ray.tune.space import SearchSpace, resolve
from thorax_ray.tune.trainable import TrialSetup, make_trainable

SETUP_FILE = "sweep.json"  # the trial setup of the experiment, reused on resume
# Logical CPUs held by each trial's driver (it only waits on its Train controller). A full CPU is
# still counted per trial when bounding concurrency, so that Ray Data's read tasks find a free one.
TRIAL_DRIVER_CPUS = 1.0
AIR_OUTPUT_ENV = TUNE_OUTPUT_ENV  # Tune's choice of console reporter, read at every fit() (thorax_ray.ray_settings)


@dataclass
class SweepOutcome:
    experiment_path: str
    rows: list  # results.TrialRow, best first
    results_csv: str
    best_config_path: str | None
    interrupted: bool
    resumed: bool


@contextlib.contextmanager
def _tune_console(verbose: int):
    """Without --verbose, Tune's own console output off: its reporter prints a configuration table and a
    TensorBoard hint at the start whatever the verbosity; the legacy reporter it falls back to with
    RAY_AIR_NEW_OUTPUT=0 prints nothing at verbosity 0. The job prints its own lines (TrialLines)."""
    if verbose:
        yield
        return
    before = os.environ.get(AIR_OUTPUT_ENV)
    os.environ[AIR_OUTPUT_ENV] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(AIR_OUTPUT_ENV, None)
        else:
            os.environ[AIR_OUTPUT_ENV] = before


def trial_lines_callback(total: int):
    """A Tune callback on the driver: one console line per trial epoch and per trial end, counted against
    the sweep's `total` trials (Tune's own progress tables only with --verbose)."""
    from ray import tune  # deferred: Ray (absent on the GPU machine)

    class TrialLines(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            auroc = result.get("val_mean_auroc")
            shown = "n/a" if auroc is None or auroc != auroc else f"{auroc:.4f}"
            console.say("tune", f"{trial.trial_id} epoch {result.get('epoch')} val_mean_auroc {shown}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            # called before Tune marks `trial` TERMINATED, and while later trials may not exist yet
            done = 1 + sum(t.status in ("TERMINATED", "ERROR") for t in trials if t is not trial)
            console.say("tune", f"{trial.trial_id} finished ({done}/{max(total, len(trials))} trials done)")

        def on_trial_error(self, iteration, trials, trial, **info):
            console.say("tune", f"{trial.trial_id} failed: see {trial.local_path}")

    return TrialLines()


def max_concurrent_trials(workers: int, cpus_per_worker: float, *, cpus: float, gpus: float = 0.0,
                          use_gpu: bool = False) -> int:
    """How many trials fit at once: floor(CPUs / (Train workers' CPUs + 1 for the trial's driver)) and, with
    GPUs, floor(GPUs / workers) (one GPU per worker); at least 1. `cpus`/`gpus`: what the cluster has or its
    autoscaler can launch (`ClusterCapacity.cpus_for`: on a private local Ray, the machine's cores)."""
    bound = math.floor(cpus / (workers * cpus_per_worker + TRIAL_DRIVER_CPUS))
    if use_gpu:
        bound = min(bound, math.floor(gpus / workers))
    return max(1, bound)


def _room(cpus: float, gpus: float | None, capacity: ClusterCapacity) -> str:
    """What bounded the trials at once, said in the sweep's first line."""
    units = f"{cpus:g} {'cores' if capacity.local else 'CPUs'}" + (f", {gpus:g} GPUs" if gpus is not None else "")
    return f"{units} on this machine" if capacity.local else f"{units} up or launchable"


def trial_placement(run, *, use_gpu: bool, capacity: ClusterCapacity, concurrent: int):
    """The placement of one trial's Train workers (on the training node type), said with the sweep's bound."""
    trial = training_placement(workers=run.workers, cpus_per_worker=run.cpus_per_worker, use_gpu=use_gpu,
                               capacity=capacity)
    return replace(trial, what="training workers per trial", notes=(
        *trial.notes, f"up to {concurrent} trials at once", f"each trial's driver x {{CPU {TRIAL_DRIVER_CPUS:g}}}"))


def _read_setup(experiment_path: str, endpoint: str | None) -> TrialSetup | None:
    fs, path = storage.filesystem(storage.join(experiment_path, SETUP_FILE), endpoint_url=endpoint)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as handle:
        data = json.loads(handle.read())
    return TrialSetup(base=data["base"], runs_root=data["runs_root"])


def _write_setup(experiment_path: str, setup: TrialSetup, endpoint: str | None) -> None:
    fs, path = storage.filesystem(storage.join(experiment_path, SETUP_FILE), endpoint_url=endpoint)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, json.dumps({"base": setup.base, "runs_root": setup.runs_root}, indent=2).encode())


def run_sweep(space: SearchSpace, *, storage_uri: str, name: str, out_dir: str, trials: int | None = None,
              max_concurrent: int | None = None, verbose: int = 0, capacity: ClusterCapacity | None = None) -> SweepOutcome:
    from ray import tune  # deferred: Ray (absent on the GPU machine)

    base_config = space.base_config()
    capacity = capacity or cluster_capacity(base_config.run.cluster_config)
    run = base_config.run
    use_gpu = resolve_use_gpu(run.use_gpu, capacity, gpus_needed=run.workers, what=f"each trial's {run.workers} worker(s)")
    check_shared_storage(storage_uri, capacity, what="--storage", shared_fs=run.shared_fs)
    check_shared_storage(base_config.data.data, capacity, what="--data", shared_fs=run.shared_fs)
    space = space.with_base({"run": {"use_gpu": "true" if use_gpu else "false"}})  # every trial decides alike
    endpoint = base_config.data.s3_endpoint
    root = storage_uri if storage.is_remote(storage_uri) else os.path.abspath(storage_uri)
    experiment_path = storage.join(root, name)
    storage_path, storage_filesystem = ray_storage(root, endpoint)
    restore_path = storage.join(storage_path, name) if storage_filesystem is None else f"{storage_path}/{name}"

    setup = TrialSetup(base=space.base, runs_root=storage.join(experiment_path, "runs"), capacity=capacity)
    saved = _read_setup(experiment_path, endpoint)
    resumed = saved is not None and tune.Tuner.can_restore(restore_path, storage_filesystem=storage_filesystem)
    if resumed:
        if saved.base != setup.base:
            console.say("tune", f"{name}: resuming with the settings the experiment started with "
                                f"({storage.join(experiment_path, SETUP_FILE)}); changed flags are ignored")
        setup = TrialSetup(base=saved.base, runs_root=saved.runs_root, capacity=capacity)
        base_config = TrainConfig.from_dict(resolve(saved.base, {}))
    else:
        _write_setup(experiment_path, setup, endpoint)

    # a trial's workers run on the training node type (GPUs) or the CPU type (CPUs) only
    cpus, gpus = capacity.cpus_for(TRAIN_ROLE if use_gpu else CPU_ROLE), capacity.gpus_for(TRAIN_ROLE)
    bound = max_concurrent_trials(base_config.run.workers, base_config.run.cpus_per_worker, cpus=cpus, gpus=gpus,
                                  use_gpu=use_gpu)
    concurrent = min(max_concurrent, bound) if max_concurrent else bound
    placement = trial_placement(run, use_gpu=use_gpu, capacity=capacity, concurrent=concurrent)
    console.say("tune", placement.describe())
    wait_until_placed(placement, timeout_s=run.placement_timeout_s, stage="tune")  # one trial's workers, or exit 75
    trainable = tune.with_resources(make_trainable(setup), {"cpu": TRIAL_DRIVER_CPUS})

    if resumed:
        console.say("tune", f"resuming experiment {experiment_path}: finished trials are kept, unfinished ones "
                            "continue from their latest epoch checkpoint")
        tuner = tune.Tuner.restore(restore_path, trainable=trainable, resume_errored=True,
                                   storage_filesystem=storage_filesystem)
    else:
        tuner = _new_tuner(space, trainable, base_config, trials=trials, concurrent=concurrent, use_gpu=use_gpu,
                           room=_room(cpus, gpus if use_gpu else None, capacity), name=name,
                           experiment_path=experiment_path, storage_path=storage_path,
                           storage_filesystem=storage_filesystem, verbose=verbose)
    with _tune_console(verbose):
        grid = tuner.fit()
    return _outcome(grid, setup, space.tune, out_dir, experiment_path=experiment_path, name=name, resumed=resumed)


def _new_tuner(space: SearchSpace, trainable, base_config: TrainConfig, *, trials: int | None, concurrent: int,
               use_gpu: bool, room: str, name: str, experiment_path: str, storage_path: str,
               storage_filesystem, verbose: int):
    """A Tuner for a new experiment: ASHA (or FIFO) on the space's metric, the search algorithm bounding
    concurrency, one console line saying what runs."""
    from ray import tune  # deferred: Ray (absent on the GPU machine)
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler  # deferred: Ray (absent on the GPU machine)
    from ray.tune.search import BasicVariantGenerator  # deferred: Ray (absent on the GPU machine)

    settings = space.tune
    samples = max(1, math.ceil((trials or settings.num_samples) / space.grid_size))
    max_t = settings.max_t or base_config.optim.epochs
    # max_t + 1: Tune stops a trial whose time_attr reaches max_t, killing its Train run while it shuts
    # down; one more lets a trial that survives every rung end by itself (its loop stops at max_t).
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=max_t + 1, grace_period=settings.grace_period,
                               reduction_factor=settings.reduction_factor)
                 if settings.scheduler == "asha" else FIFOScheduler())
    console.say("tune", f"experiment {experiment_path}: {samples * space.grid_size} trials of "
                        f"{base_config.run.workers} worker(s) on {'GPUs' if use_gpu else 'CPUs'}, up to {concurrent} "
                        f"at a time ({room}), "
                        f"{settings.scheduler.upper()} on {settings.metric} ({settings.mode}), max {max_t} epochs")
    return tune.Tuner(
        trainable,
        param_space=space.param_space(),
        tune_config=tune.TuneConfig(
            metric=settings.metric, mode=settings.mode, scheduler=scheduler, num_samples=samples,
            trial_dirname_creator=results_mod.trial_dirname,  # concurrency: the search algorithm's own bound
            search_alg=BasicVariantGenerator(random_state=settings.seed, max_concurrent=concurrent),
        ),
        run_config=tune.RunConfig(name=name, storage_path=storage_path, storage_filesystem=storage_filesystem,
                                  failure_config=tune.FailureConfig(max_failures=0), verbose=verbose,
                                  callbacks=[trial_lines_callback(samples * space.grid_size)]),
    )


def _outcome(grid, setup: TrialSetup, settings, out_dir: str, *, experiment_path: str, name: str,
             resumed: bool) -> SweepOutcome:
    """Every trial's row (results.csv) and the best trial's config (best_config.yaml) in `out_dir`."""
    from ray import tune  # deferred: Ray (absent on the GPU machine)

    trials_list = tune.ExperimentAnalysis(grid.experiment_path, storage_filesystem=grid.filesystem).trials
    rows = results_mod.collect(trials_list, setup, settings.metric, settings.mode)
    interrupted = any(r.status not in results_mod.FINISHED for r in rows)
    endpoint = setup.endpoint_url
    results_csv = results_mod.write_results(rows, out_dir, endpoint_url=endpoint)
    best_path = None
    best = results_mod.best_config(rows, setup)
    if best is not None:
        best_path = results_mod.write_best_config(*best, out_dir, experiment=name, metric=settings.metric,
                                                  endpoint_url=endpoint)
    return SweepOutcome(experiment_path=experiment_path, rows=rows, results_csv=results_csv,
                        best_config_path=best_path, interrupted=interrupted, resumed=resumed)
