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
them. Before giving it back it checks CUDA on the node of every GPU bundle (thorax_ray.node_check, one small
task per bundle, in the bundle): a node that cannot run CUDA ends the job there, with one line naming the node
(exit 69), before Ray Train starts a worker group or the scoring pool an actor; nothing to check, and no task,
for work without GPUs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

from thorax_ray import console, exit_codes
from thorax_ray.cluster import CPU_ROLE, SCORE_ROLE, TRAIN_ROLE, ClusterCapacity, ClusterError
from thorax_ray.node_check import CudaUnusable, problem_line

FIRST_WAIT_LINE_S = 10.0  # a job not placed by then says what it waits for ...
WAIT_LINE_EVERY_S = 60.0  # ... and again every minute
CUDA_CHECK_TIMEOUT_S = 300.0  # a bundle's CUDA check (a worker start, torch's import, a tensor op) answers by then
FREED_TIMEOUT_S = 10.0  # a placed group given back shows up free in the cluster's resource view by then


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
    for them), checks CUDA on the node of each GPU unit (require_cuda_where_placed: node_check.CudaUnusable,
    exit 69), then frees them for the job; returns the seconds waited. Says what it waits for after
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
                require_cuda_where_placed(group, plan)
                remove_placement_group(group)
                group = None
                wait_until_freed(plan)
                return time.monotonic() - started
    finally:
        if group is not None:
            remove_placement_group(group)


def wait_until_freed(plan: Placement, *, timeout_s: float = FREED_TIMEOUT_S, poll_s: float = 0.1) -> bool:
    """Waits (at most `timeout_s`) until the cluster's resource view shows one unit of `plan.ask` free again
    after its group was given back; True when it does. Ray gives a group back asynchronously and its view of
    free resources lags: work started at once saw the units still held (on 2 CPUs, Ray Data's start-up check
    found "no available CPUs" and printed its warning). Not finding them in time is not an error: other jobs
    may have taken them, and the job's own work waits for capacity as before."""
    import ray  # deferred: Ray (absent on the GPU machine)

    deadline = time.monotonic() + timeout_s
    while True:
        free = ray.available_resources()
        if all(free.get(name, 0.0) >= amount for name, amount in plan.ask.items()):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


def require_cuda_where_placed(group, plan: Placement, *, timeout_s: float = CUDA_CHECK_TIMEOUT_S) -> None:
    """Checks CUDA on the node of each of `plan`'s GPU bundles in the placed `group`, all at once; raises
    node_check.CudaUnusable with the first failing bundle's line (naming its node; how many others failed
    after it). Prints nothing when every node passes; a plan without GPUs starts no task."""
    gpus = plan.ask.get("GPU", 0.0)
    if not gpus:
        return
    problems = cuda_problems_in_bundles(group, range(plan.count), gpus=gpus, timeout_s=timeout_s)
    if problems:
        more = f" (and {len(problems) - 1} more of the job's {plan.count} GPU bundles)" if len(problems) > 1 else ""
        raise CudaUnusable(problems[0] + more)


def cuda_problems_in_bundles(group, bundles, *, gpus: float, timeout_s: float = CUDA_CHECK_TIMEOUT_S) -> list[str]:
    """node_check.problem_line() run by one task per bundle index of `bundles`, in that bundle of the placed
    `group` with `gpus` GPUs (Ray makes the bundle's GPU the task's cuda:0) and no CPU; the problems found, in
    bundle order. A bundle whose task has not answered within `timeout_s` (a CUDA call that hangs) is a problem
    naming the bundle's node."""
    import ray  # deferred: Ray (absent on the GPU machine)
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy  # deferred: Ray

    check = ray.remote(_cuda_problem_here)
    asked = {}
    for index in bundles:
        in_bundle = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index)
        asked[check.options(num_cpus=0, num_gpus=gpus, max_retries=0, scheduling_strategy=in_bundle).remote()] = index
    answered, late = ray.wait(list(asked), num_returns=len(asked), timeout=timeout_s)
    problems = {}
    for ref in answered:
        try:
            problems[asked[ref]] = ray.get(ref)
        except ray.exceptions.RayError as error:  # torch's import failed there, or the process died in CUDA
            cause = getattr(error, "cause", None) or error
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            failed = f"{type(cause).__name__}: {first}"
            problems[asked[ref]] = f"{unusable_on(group, asked[ref])}its check failed: {failed}"
    for ref in late:
        problems[asked[ref]] = (f"{unusable_on(group, asked[ref])}its check (torch's import and a tensor op on "
                                f"cuda:0) did not answer within {timeout_s:g} s")
    return [problems[index] for index in sorted(problems) if problems[index]]


def unusable_on(group, index: int) -> str:
    """The start of node_check's line for the node of bundle `index`, when the check itself gave no line."""
    return f"node {bundle_node(group, index)}: CUDA is not usable for this GPU job: "


def _cuda_problem_here() -> str | None:
    """The pre-flight task: this node's CUDA problem line, or None."""
    return problem_line()


def bundle_node(group, index: int) -> str:
    """'host (ip)' of the node that holds bundle `index` of the placed `group` (its Ray node ID if not found)."""
    import ray  # deferred: Ray (absent on the GPU machine)
    from ray.util import placement_group_table  # deferred: Ray

    node_id = placement_group_table(group).get("bundles_to_node_id", {}).get(index, "?")
    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            return f"{node.get('NodeManagerHostname', '?')} ({node.get('NodeManagerAddress', '?')})"
    return f"with Ray node ID {node_id}"


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
