"""Where a job's work runs on the cluster, said in one line before it starts, and a deadline on getting it
placed, so that a job the cluster cannot place says what it waits for instead of waiting silently.

    plan = training_placement(workers=8, cpus_per_worker=8, use_gpu=True, capacity=capacity)
    console.say("train", plan.describe())      # placement: 8 training workers x {CPU 8, GPU 1, thorax_train 8}
    ray_resources = plan.ask                   # what each worker asks Ray for (its role's resource included)
    plan.task_resources(cpus=1)                # what each of the job's data tasks asks besides its CPU
    wait_until_placed(plan, timeout_s=300, stage="train")   # PlacementTimeout (exit 75) after the deadline

On a steered cluster (node types declaring thorax_ray.cluster's role resources, one unit per CPU, as
cluster.yaml's do) every actor and task of a job asks for as many units of its role's resource as CPUs, so it
can only run on that role's node types and the autoscaler launches only those for it. The wait reserves the
units' bundles in a placement group (what Ray Train also does for its workers) and gives it back as soon as it
is placed: Ray Train and Ray Data, left alone, retry for ever and print nothing while the cluster cannot place
them.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

from thorax_ray import console, exit_codes
from thorax_ray.cluster import CPU_ROLE, SCORE_ROLE, TRAIN_ROLE, ClusterCapacity, ClusterError

FIRST_WAIT_LINE_S = 10.0  # a job not placed by then says what it waits for ...
WAIT_LINE_EVERY_S = 60.0  # ... and again every minute


class PlacementTimeout(ClusterError):
    """The cluster could not place a job's work within its deadline (exit 75: try again later)."""

    exit_code = exit_codes.TEMPFAIL  # capacity may come later: run the job again


def format_resources(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k} {v:g}" for k, v in sorted(resources.items()) if v) + "}"


@dataclass(frozen=True)
class Placement:
    """`count` units of `ask` each (training workers, the scoring pool's first actors, ...) that must be placed
    before the work starts; `most` > count for a pool that grows (scoring actors)."""

    what: str
    count: int
    ask: dict[str, float]
    role: str | None = None  # the role resource in `ask`; None: the cluster is not steered
    node_types: tuple[str, ...] = ()  # the launchable node types of that role
    most: int | None = None
    notes: tuple[str, ...] = field(default=())  # more of the plan, said on the same line
    counted: bool = True  # False: as many units as the work needs (tasks), `count` is what is waited for

    def describe(self) -> str:
        count = f"{self.count}..{self.most}" if self.most and self.most != self.count else f"{self.count}"
        if not self.counted:
            count = "its"
        if self.node_types:
            where = f"on node type {', '.join(self.node_types)} only"
        elif self.role:
            where = f"on nodes with {self.role} only"
        else:
            where = "wherever Ray finds room (no node roles declared)"
        return "; ".join([f"placement: {count} {self.what} x {format_resources(self.ask)} {where}", *self.notes])

    def task_resources(self, cpus: float = 1.0) -> dict[str, float]:
        """The custom resources a data task of this job asks for besides its `cpus` CPUs (its role's units)."""
        return {self.role: cpus} if self.role else {}

    def waiting_for(self) -> str:
        types = f" on node type {', '.join(self.node_types)}" if self.node_types else ""
        return f"{self.count} x {format_resources(self.ask)}{types}"


def custom_resources(ask: dict[str, float]) -> dict[str, float]:
    """The custom resources of an ask (its node role), for APIs that take CPUs and GPUs apart."""
    return {k: v for k, v in ask.items() if k not in ("CPU", "GPU")}


def steered_ask(base: dict[str, float], capacity: ClusterCapacity, *,
                gpu_role: str | None = None) -> tuple[dict[str, float], str | None]:
    """`base` plus as many units of its role's resource as it asks CPUs, on a steered cluster: `gpu_role` for
    GPU work (resolve_use_gpu has checked that type can provide the GPUs), the CPU role for CPU work (anywhere
    when no type declares it)."""
    gpus = base.get("GPU", 0.0)
    role, units = (gpu_role if gpus else CPU_ROLE), base.get("CPU", 1.0)
    if not (capacity.steered if gpus else capacity.steers(CPU_ROLE)):
        return dict(base), None
    return {**base, role: units}, role


def _plan(what: str, count: int, base: dict[str, float], capacity: ClusterCapacity, *, gpu_role: str | None = None,
          most: int | None = None, notes: tuple[str, ...] = ()) -> Placement:
    ask, role = steered_ask(base, capacity, gpu_role=gpu_role)
    types = tuple(t.name for t in capacity.node_types_for(role)) if role else ()
    return Placement(what=what, count=count, ask=ask, role=role, node_types=types, most=most, notes=notes)


def with_tasks(plan: Placement, what: str) -> Placement:
    """`plan` saying where the job's data tasks (1 CPU each) go: with its units on a steered cluster."""
    tasks = format_resources({"CPU": 1.0, **plan.task_resources(1.0)})
    where = "on the same node type" if plan.role else "anywhere"
    return replace(plan, notes=(*plan.notes, f"{what} x {tasks} {where}"))


def training_placement(*, workers: int, cpus_per_worker: float, use_gpu: bool,
                       capacity: ClusterCapacity) -> Placement:
    """A DDP group: every worker on the training node type (GPU) or the CPU type (CPU), never across types."""
    base = {"CPU": cpus_per_worker, **({"GPU": 1.0} if use_gpu else {})}
    return with_tasks(_plan("training workers", workers, base, capacity, gpu_role=TRAIN_ROLE), "data tasks")


def scoring_placement(*, min_actors: int, max_actors: int, cpus: float, gpus: float,
                      capacity: ClusterCapacity) -> Placement:
    """The scoring pool's actors on the scoring node type, its decode tasks on the same type (the CPUs that come
    with the GPUs); its first `min_actors` must be placed to start."""
    base = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    return with_tasks(_plan("scoring actors", min_actors, base, capacity, gpu_role=SCORE_ROLE, most=max_actors),
                      "decode tasks")


def cpu_task_placement(what: str, *, cpus: float, capacity: ClusterCapacity) -> Placement:
    """CPU tasks (prepare's read/decode/write): on the CPU node type."""
    return replace(_plan(what, 1, {"CPU": cpus}, capacity), counted=False)


def sized_actor_cpus(capacity: ClusterCapacity, *, gpus: float, role: str = SCORE_ROLE, share: float = 0.25,
                     most: int = 8) -> float:
    """CPUs of a GPU actor sized from its node type: `share` of the CPUs that come with its GPUs (the rest
    read and decode images for it), 1 to `most`; 1 without a steered node type (a local Ray, CPU work)."""
    types = capacity.node_types_for(role) if gpus else ()
    per_gpu = [t.resources.get("CPU", 0.0) / t.resources["GPU"] for t in types if t.resources.get("GPU")]
    if not per_gpu:
        return 1.0
    return float(min(most, max(1, math.floor(min(per_gpu) * gpus * share))))


def wait_until_placed(plan: Placement, *, timeout_s: float, stage: str) -> float:
    """Blocks until `plan.count` units of `plan.ask` fit in the cluster at once (the autoscaler launching nodes
    for them), then frees them for the job; returns the seconds waited. Says what it waits for after
    FIRST_WAIT_LINE_S and every minute after; raises PlacementTimeout after `timeout_s` (<= 0: no deadline)."""
    from ray.util import placement_group, remove_placement_group  # deferred: Ray (absent on the GPU machine)

    started = time.monotonic()
    group = placement_group([dict(plan.ask) for _ in range(plan.count)], strategy="PACK",
                            name=f"thorax-{stage}-placement")
    try:
        next_line = started + FIRST_WAIT_LINE_S
        while True:
            now = time.monotonic()
            waited = now - started
            if timeout_s > 0 and waited >= timeout_s:
                raise PlacementTimeout(
                    f"{stage}: the cluster could not place {plan.waiting_for()} within {timeout_s:g} s "
                    f"({nodes_up(plan)}); the autoscaler could not launch enough nodes (its max_workers, or the "
                    f"cloud's capacity or quota: see `ray status` and the autoscaler log); run again later or "
                    f"raise --placement-timeout")
            if now >= next_line:
                console.say(stage, f"waiting {waited:.0f} s for the cluster to place {plan.waiting_for()} "
                                   f"({nodes_up(plan)}); gives up after "
                                   f"{f'{timeout_s:g} s' if timeout_s > 0 else 'never'} (--placement-timeout)")
                next_line = now + WAIT_LINE_EVERY_S
            step = min(next_line - now, (started + timeout_s - now) if timeout_s > 0 else math.inf, 5.0)
            if group.wait(timeout_seconds=max(1, math.ceil(step))):  # whole seconds: Ray's backend takes an int
                return time.monotonic() - started
    finally:
        remove_placement_group(group)


def keep_data_on_role_nodes(plan: Placement) -> None:
    """Bounds the CPUs this process's Ray Data executions use (and ask the autoscaler for) by those of the
    role's nodes that are up. Ray Data's autoscaling hints are plain `{"CPU": 1}` bundles (padded when the
    object store fills): unbounded, they made the autoscaler start nodes of other types, e.g. scoring nodes
    during training, which then idled. The job's tasks ask for the role anyway, so they cannot use more."""
    import ray  # deferred: Ray (absent on the GPU machine)
    from ray.data import DataContext  # deferred: Ray (absent on the GPU machine)

    cpus = float(ray.cluster_resources().get(plan.role, 0.0)) if plan.role else 0.0
    if cpus <= 0:  # not steered, or none of the role's nodes up yet (a Tune trial): a cap of 0 would hang
        return
    options = DataContext.get_current().execution_options
    options.resource_limits = options.resource_limits.copy(cpu=cpus)


def nodes_up(plan: Placement) -> str:
    """'N node(s) with <role> up' (or with GPUs/CPUs) now."""
    import ray  # deferred: Ray (absent on the GPU machine)

    key = plan.role or ("GPU" if plan.ask.get("GPU") else "CPU")
    count = sum(1 for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get(key, 0) > 0)
    return f"{count} node(s) with {key} up"
