"""What the Ray cluster has now and what its autoscaler can launch, and the decisions taken from it before
any work starts: whether to use GPUs, how many actors or trials fit, and whether local paths may be used.

Every node type of `cluster.yaml` starts at zero workers, so the cluster a job sees at start-up is usually
just the head: deciding from `ray.cluster_resources()` alone would train on CPUs and never start a GPU node.
The worker node types come from the autoscaler's config file: `--cluster-config FILE`, else
`$THORAX_CLUSTER_CONFIG`, else `~/ray_bootstrap_config.yaml` (where `ray up` puts it on the head node, and
where `ray job submit` runs a job's driver).

    capacity = cluster_capacity(config_path)          # Ray must be initialised
    use_gpu = resolve_use_gpu("auto", capacity)       # True when GPUs are up or launchable
    check_shared_storage("runs", capacity, what="--storage")   # ClusterError on a multi-node cluster
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import yaml

from thorax_ray import storage

CLUSTER_CONFIG_ENV = "THORAX_CLUSTER_CONFIG"
# Node roles. Each worker node type of cluster.yaml declares one of these custom resources, one unit per CPU of
# the node, and every task and actor of a job asks for as many units of its role's resource as it asks CPUs:
# training workers and their data tasks (and so Tune's trials) run only on training nodes, so a DDP group never
# spans node types; scoring actors and their decode tasks only on scoring nodes; CPU work (prepare's tasks,
# jobs run on CPUs) only on CPU nodes. A cluster whose node types declare none (a local Ray, a hand-made
# cluster) is not steered: work goes wherever Ray finds room, as before.
TRAIN_ROLE = "thorax_train"
SCORE_ROLE = "thorax_score"
CPU_ROLE = "thorax_cpu"
ROLE_RESOURCES = (TRAIN_ROLE, SCORE_ROLE, CPU_ROLE)
DEFAULT_PLACEMENT_TIMEOUT_S = 300.0  # --placement-timeout: how long a job waits to be placed (thorax_ray.placement)
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
USE_GPU_CHOICES = ("auto", "true", "false")


class ClusterError(ValueError):
    """The cluster cannot run the job as asked (raised before any work starts)."""


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict[str, float]
    max_workers: int


@dataclass(frozen=True)
class ClusterCapacity:
    alive_nodes: int
    resources_up: dict[str, float]  # summed over the alive nodes
    node_types: tuple[NodeType, ...] = ()  # worker node types the autoscaler can launch (max_workers > 0)
    config_path: str | None = None  # the autoscaler config they were read from
    local: bool = False  # a private local Ray started by this job
    max_worker_nodes: int | None = None  # the config's global max_workers
    role_gpus_up: dict[str, float] = field(default_factory=dict)  # GPUs of the alive nodes of each role
    cores: int | None = None  # a private local Ray: the machine's cores (it advertises more CPUs, see cpus_for)

    def launchable(self, resource: str) -> float:
        """How much of `resource` the autoscaler can add (each type at its max_workers, capped by the
        global max_workers)."""
        cap = self.max_worker_nodes if self.max_worker_nodes is not None else math.inf
        return sum(t.resources.get(resource, 0.0) * min(t.max_workers, cap) for t in self.node_types)

    def most(self, resource: str) -> float:
        """An upper bound of `resource` in the cluster: what is up plus what the autoscaler can launch."""
        return self.resources_up.get(resource, 0.0) + self.launchable(resource)

    @property
    def gpus_up(self) -> float:
        return self.resources_up.get("GPU", 0.0)

    @property
    def multi_node(self) -> bool:
        return self.alive_nodes > 1 or any(t.max_workers > 0 for t in self.node_types)

    def steers(self, role: str) -> bool:
        """Whether a node type (launchable or up) declares `role`: then work of that role must ask for it."""
        return self.resources_up.get(role, 0.0) > 0 or any(role in t.resources for t in self.node_types)

    @property
    def steered(self) -> bool:
        """Whether the cluster declares node roles at all (cluster.yaml does; a local Ray does not)."""
        return any(self.steers(role) for role in ROLE_RESOURCES)

    def gpus_for(self, role: str) -> float:
        """The most GPUs work of `role` (TRAIN_ROLE, SCORE_ROLE) can have on a steered cluster: its node types
        at their max_workers, which count the nodes of those types already up (or the GPUs up on nodes of the
        role, when more); none when no type has the role. Unsteered: every GPU up or launchable."""
        if not self.steered:
            return self.most("GPU")
        cap = self.max_worker_nodes if self.max_worker_nodes is not None else math.inf
        launchable = sum(t.resources.get("GPU", 0.0) * min(t.max_workers, cap) for t in self.node_types_for(role))
        return max(self.role_gpus_up.get(role, 0.0), launchable)

    def cpus_for(self, role: str) -> float:
        """CPUs up or launchable for work of `role`: its units (one per CPU) on a steered cluster that declares
        the role, else every CPU. On a private local Ray at most the machine's cores: the CPUs it advertises
        beyond them are room for training's data tasks (ray_setup.LOCAL_EXTRA_CPUS), not for more work at once."""
        cpus = self.most(role) if self.steers(role) else self.most("CPU")
        return min(cpus, self.cores) if self.cores else cpus

    def node_types_for(self, role: str) -> tuple[NodeType, ...]:
        return tuple(t for t in self.node_types if role in t.resources)

    def describe(self) -> str:
        up = ", ".join(f"{k} {v:g}" for k, v in sorted(self.resources_up.items()) if k in ("CPU", "GPU"))
        types = "; ".join(f"{t.name} x{t.max_workers} ({', '.join(f'{k} {v:g}' for k, v in sorted(t.resources.items()))})"
                          for t in self.node_types)
        source = "private local Ray" if self.local else f"{self.alive_nodes} node(s) up"
        return f"{source} ({up or 'no CPU/GPU'})" + (f"; can launch {types} ({self.config_path})" if types else "")


def find_cluster_config(path: str | None = None) -> str | None:
    """The autoscaler config to read: `path`, else $THORAX_CLUSTER_CONFIG, else the head's bootstrap config
    when it exists. A given path that does not exist is an error."""
    given = path or os.environ.get(CLUSTER_CONFIG_ENV)
    if given:
        if not os.path.exists(os.path.expanduser(given)):
            raise ClusterError(f"{given}: cluster config not found")
        return os.path.expanduser(given)
    default = os.path.expanduser(BOOTSTRAP_CONFIG)
    return default if os.path.exists(default) else None


def read_node_types(path: str) -> tuple[tuple[NodeType, ...], int | None]:
    """Worker node types (resources, max_workers) and the global max_workers of an autoscaler config
    (`cluster.yaml` or Ray's bootstrap config, YAML or JSON)."""
    try:
        with open(path) as handle:
            config = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ClusterError(f"{path}: cannot read the cluster config: {error}") from None
    types = config.get("available_node_types") or {}
    if not isinstance(types, dict):
        raise ClusterError(f"{path}: available_node_types is not a mapping")
    head = config.get("head_node_type")
    found = []
    for name, spec in types.items():
        spec = spec or {}
        max_workers = int(spec.get("max_workers", 0) or 0)
        if name == head or max_workers <= 0:
            continue
        resources = {str(k): float(v) for k, v in (spec.get("resources") or {}).items()}
        found.append(NodeType(name=str(name), resources=resources, max_workers=max_workers))
    global_max = config.get("max_workers")
    return tuple(found), (int(global_max) if global_max is not None else None)


def cluster_capacity(config_path: str | None = None, *, local: bool = False) -> ClusterCapacity:
    """What the connected Ray cluster has and can launch. A private local Ray (`local`) launches nothing."""
    import ray  # deferred: Ray (absent on the GPU machine)

    alive = [n for n in ray.nodes() if n.get("Alive")]
    up = {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory", *ROLE_RESOURCES)}
    role_gpus = {role: sum(float(n["Resources"].get("GPU", 0)) for n in alive if n.get("Resources", {}).get(role))
                 for role in ROLE_RESOURCES}
    if local:
        return ClusterCapacity(alive_nodes=len(alive), resources_up=up, local=True, role_gpus_up=role_gpus,
                               cores=os.cpu_count() or 1)
    path = find_cluster_config(config_path)
    node_types, max_worker_nodes = read_node_types(path) if path else ((), None)
    return ClusterCapacity(alive_nodes=len(alive), resources_up=up, node_types=node_types, config_path=path,
                           max_worker_nodes=max_worker_nodes, role_gpus_up=role_gpus)


def parse_use_gpu(value: str | bool | None) -> str:
    """'auto' | 'true' | 'false' from a flag, YAML bool or None (auto)."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip().lower()
    aliases = {"yes": "true", "1": "true", "on": "true", "no": "false", "0": "false", "off": "false"}
    text = aliases.get(text, text)
    if text not in USE_GPU_CHOICES:
        raise ClusterError(f"use_gpu must be one of {', '.join(USE_GPU_CHOICES)}; got {value!r}")
    return text


def resolve_use_gpu(setting: str | bool | None, capacity: ClusterCapacity, *, gpus_needed: float = 1.0,
                    what: str = "the job", role: str = TRAIN_ROLE) -> bool:
    """`auto`: GPUs when the cluster has or can launch them (on the node types of `role` when it is steered);
    `true`: GPUs, and an error now when the cluster can never provide `gpus_needed` of them; `false`: CPUs."""
    setting = parse_use_gpu(setting)
    if setting == "false":
        return False
    most = capacity.gpus_for(role)
    if setting == "auto":
        return most > 0
    if most < gpus_needed:
        hint = ("a private local Ray has only this machine's GPUs" if capacity.local else
                "no autoscaler config found: pass --cluster-config (the cluster.yaml it was started with)"
                if capacity.config_path is None else
                f"the {role} node types in {capacity.config_path} do not have enough" if capacity.steered else
                f"none of the node types in {capacity.config_path} has enough")
        raise ClusterError(f"{what} asks for {gpus_needed:g} GPU(s) but the cluster can never provide them: "
                           f"{capacity.describe()}; {hint}")
    return True


def check_shared_storage(uri: str, capacity: ClusterCapacity, *, what: str, shared_fs: bool = False) -> None:
    """A local path is only seen by the node that wrote it: on a cluster with (or able to launch) more than one
    node, workers' checkpoints and outputs must go to object storage, or to a filesystem every node mounts
    (`shared_fs`, e.g. NFS/EFS)."""
    if storage.is_remote(uri) or shared_fs or not capacity.multi_node:
        return
    raise ClusterError(f"{what} {uri} is a local path, but the cluster has more than one node "
                       f"({capacity.describe()}): use s3://... or pass --shared-fs if every node mounts it")

