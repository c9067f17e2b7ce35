"""Placement plans on the shipped cluster.yaml: each job asks for its node type's role resource, so training
(and Tune's trials) can only run on gpu_train, scoring actors on gpu_score, prepare's tasks on cpu; pool and
trial bounds count only the GPUs of the job's own node type. (Placement on a live autoscaling cluster and the
deadline: tests/jobs/test_submit.py.)"""
import os

import pytest

from thorax_ray.cluster import (CPU_ROLE, SCORE_ROLE, TRAIN_ROLE, ClusterCapacity, ClusterError, NodeType,
                                read_node_types, resolve_use_gpu)
from thorax_ray.placement import (PlacementTimeout, cpu_task_placement, scoring_placement, sized_actor_cpus,
                                  training_placement)
from thorax_ray.scoring.config import ScoreConfig
from thorax_ray.scoring.pipeline import plan_actors
from thorax_ray.tune.tune import max_concurrent_trials, trial_placement

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_TYPES, SHIPPED_MAX = read_node_types(os.path.join(REPO, "cluster.yaml"))
# What a job on a fresh `ray up cluster.yaml` sees: the head (2 CPUs) up, every worker type launchable.
SHIPPED = ClusterCapacity(alive_nodes=1, resources_up={"CPU": 2.0}, node_types=SHIPPED_TYPES,
                          config_path="cluster.yaml", max_worker_nodes=SHIPPED_MAX)
UNSTEERED = ClusterCapacity(alive_nodes=1, resources_up={"CPU": 2.0},
                            node_types=(NodeType("gpu_train", {"CPU": 192.0, "GPU": 8.0}, 16),
                                        NodeType("gpu_score", {"CPU": 16.0, "GPU": 1.0}, 8)),
                            config_path="old.yaml", max_worker_nodes=24)


def test_every_worker_type_of_the_shipped_cluster_declares_one_role_unit_per_cpu():
    roles = {t.name: {r: t.resources[r] for r in (TRAIN_ROLE, SCORE_ROLE, CPU_ROLE) if r in t.resources}
             for t in SHIPPED_TYPES}
    assert roles == {"gpu_train": {TRAIN_ROLE: 192}, "gpu_score": {SCORE_ROLE: 16}, "cpu": {CPU_ROLE: 32}}
    assert all(sum(roles[t.name].values()) == t.resources["CPU"] for t in SHIPPED_TYPES)


def test_training_asks_for_the_training_type_only_so_a_ddp_group_never_spans_types():
    plan = training_placement(workers=8, cpus_per_worker=4, use_gpu=True, capacity=SHIPPED)  # configs/chexnet-8gpu
    assert plan.ask == {"CPU": 4, "GPU": 1, TRAIN_ROLE: 4} and plan.node_types == ("gpu_train",)
    assert plan.task_resources(2) == {TRAIN_ROLE: 2}  # its data tasks too
    assert plan.describe() == ("placement: 8 training workers x {CPU 4, GPU 1, thorax_train 4} on node type "
                               "gpu_train only; data tasks x {CPU 1, thorax_train 1} on the same node type")
    on_cpus = training_placement(workers=2, cpus_per_worker=2, use_gpu=False, capacity=SHIPPED)
    assert on_cpus.ask == {"CPU": 2, CPU_ROLE: 2} and on_cpus.node_types == ("cpu",)  # CPU work: the CPU type


def test_gpus_of_a_role_are_its_types_at_max_workers_whether_up_or_not():
    up = ClusterCapacity(alive_nodes=3, resources_up={"CPU": 210.0, "GPU": 9.0, TRAIN_ROLE: 192.0, SCORE_ROLE: 16.0},
                         node_types=SHIPPED_TYPES, max_worker_nodes=SHIPPED_MAX,
                         role_gpus_up={TRAIN_ROLE: 8.0, SCORE_ROLE: 1.0, CPU_ROLE: 0.0})
    assert up.gpus_for(TRAIN_ROLE) == 128 and up.gpus_for(SCORE_ROLE) == 8  # the nodes up are among max_workers
    extra = ClusterCapacity(alive_nodes=2, resources_up={SCORE_ROLE: 32.0}, node_types=(), role_gpus_up={SCORE_ROLE: 2.0},
                            config_path=None)
    assert extra.gpus_for(SCORE_ROLE) == 2  # nodes of the role outside any known type still count


def test_scoring_counts_the_scoring_gpus_only_and_sizes_its_actors_from_that_type():
    plan = plan_actors(ScoreConfig(checkpoint="c", input="i", out="o"), SHIPPED)
    assert (plan.min_actors, plan.max_actors, plan.gpus, plan.cpus) == (1, 8, 1.0, 4.0)  # before: 1..136, 1 CPU
    assert plan.placement.ask == {"CPU": 4.0, "GPU": 1.0, SCORE_ROLE: 4.0}
    assert plan.placement.describe() == ("placement: 1..8 scoring actors x {CPU 4, GPU 1, thorax_score 4} on node "
                                         "type gpu_score only; decode tasks x {CPU 1, thorax_score 1} on the same "
                                         "node type")
    two = plan_actors(ScoreConfig(checkpoint="c", input="i", out="o", min_actors=2, actor_cpus=2), SHIPPED)
    assert two.placement.count == 2 and two.cpus == 2  # an explicit --actor-cpus wins
    unsteered = plan_actors(ScoreConfig(checkpoint="c", input="i", out="o"), UNSTEERED)
    assert (unsteered.max_actors, unsteered.cpus, unsteered.placement.role) == (136, 1.0, None)


def test_actor_cpus_are_a_quarter_of_what_comes_with_the_gpus_between_1_and_8():
    assert sized_actor_cpus(SHIPPED, gpus=1.0) == 4  # g6.4xlarge: 16 CPUs for 1 GPU
    assert sized_actor_cpus(SHIPPED, gpus=0.5) == 2
    assert sized_actor_cpus(SHIPPED, gpus=0.0) == 1  # CPU actors
    big = ClusterCapacity(alive_nodes=1, resources_up={}, node_types=(
        NodeType("s", {"CPU": 192.0, "GPU": 1.0, SCORE_ROLE: 192.0}, 1),))
    assert sized_actor_cpus(big, gpus=1.0) == 8
    assert sized_actor_cpus(UNSTEERED, gpus=1.0) == 1  # no scoring type declared: today's 1


def test_prepare_tasks_ask_for_the_cpu_type():
    plan = cpu_task_placement("read/decode/write tasks", cpus=1, capacity=SHIPPED)
    assert plan.ask == {"CPU": 1, CPU_ROLE: 1} and plan.node_types == ("cpu",)
    assert plan.describe() == "placement: its read/decode/write tasks x {CPU 1, thorax_cpu 1} on node type cpu only"
    assert plan.task_resources(1) == {CPU_ROLE: 1}
    local = cpu_task_placement("tasks", cpus=1, capacity=ClusterCapacity(alive_nodes=1, resources_up={"CPU": 2.0},
                                                                         local=True))
    assert local.ask == {"CPU": 1} and "no node roles declared" in local.describe()


def test_tune_bounds_trials_by_the_training_gpus_not_the_scoring_ones():
    gpus = SHIPPED.gpus_for(TRAIN_ROLE)
    assert gpus == 128 and SHIPPED.most("GPU") == 136  # 16 x 8 on gpu_train; 8 x 1 on gpu_score not counted
    assert max_concurrent_trials(1, 1, cpus=SHIPPED.most("CPU"), gpus=gpus, use_gpu=True) == 128
    assert max_concurrent_trials(4, 4, cpus=SHIPPED.most("CPU"), gpus=gpus, use_gpu=True) == 32  # tune_spaces/full


def test_tune_line_of_the_readmes_64_trial_run():
    from thorax_ray.train.config import RunSettings

    run = RunSettings(workers=1)  # README step 5: --trials 64 --workers 1
    bound = max_concurrent_trials(1, 1, cpus=SHIPPED.most("CPU"), gpus=SHIPPED.gpus_for(TRAIN_ROLE), use_gpu=True)
    line = trial_placement(run, use_gpu=True, capacity=SHIPPED, concurrent=bound).describe()
    assert line == ("placement: 1 training workers per trial x {CPU 1, GPU 1, thorax_train 1} on node type gpu_train "
                    "only; data tasks x {CPU 1, thorax_train 1} on the same node type; up to 128 trials at once; "
                    "each trial's driver x {CPU 1}")


def test_gpu_checks_count_the_gpus_of_the_jobs_own_type():
    score_only = ClusterCapacity(alive_nodes=1, resources_up={"CPU": 2.0}, config_path="c.yaml", node_types=(
        NodeType("gpu_score", {"CPU": 16.0, "GPU": 1.0, SCORE_ROLE: 16.0}, 8),))
    assert resolve_use_gpu("auto", score_only, role=TRAIN_ROLE) is False  # no training GPUs: CPUs, not L4s
    assert resolve_use_gpu("auto", score_only, role=SCORE_ROLE) is True
    with pytest.raises(ClusterError, match="thorax_train node types in c.yaml do not have enough"):
        resolve_use_gpu("true", score_only, gpus_needed=1, role=TRAIN_ROLE)


def test_the_deadline_error_exits_75_through_the_jobs_error_path():
    error = PlacementTimeout("x")
    assert isinstance(error, ValueError) and error.exit_code == 75


def test_scoring_placement_without_gpus_goes_to_the_cpu_type():
    plan = scoring_placement(min_actors=1, max_actors=1, cpus=1, gpus=0, capacity=SHIPPED)
    assert plan.ask == {"CPU": 1, CPU_ROLE: 1} and plan.node_types == ("cpu",)


class FakeGroup:
    """A placement group that is placed at once (what ray.util.placement_group returns, for wait_until_placed)."""

    def __init__(self, bundles, **_):
        self.bundles = bundles

    def wait(self, timeout_seconds):
        return True


@pytest.fixture
def placed_at_once(monkeypatch):
    """Ray's placement-group functions stood in (no Ray started): every group is placed at once; returns the
    list of groups removed."""
    import sys
    import types

    removed = []
    util = types.SimpleNamespace(placement_group=FakeGroup, remove_placement_group=removed.append)
    everything_free = lambda: {"CPU": 1e6, "GPU": 1e6, "thorax_train": 1e6, "thorax_score": 1e6, "thorax_cpu": 1e6}
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(util=util, available_resources=everything_free))
    monkeypatch.setitem(sys.modules, "ray.util", util)
    return removed


def test_a_gpu_job_checks_cuda_on_every_bundle_while_its_group_is_placed_and_prints_nothing(
        placed_at_once, monkeypatch, capsys):
    from thorax_ray import placement

    checked = []

    def check(group, bundles, *, gpus, timeout_s):
        assert group not in placed_at_once, "the group was removed before its nodes were checked"
        checked.append((len(group.bundles), list(bundles), gpus))
        return []

    monkeypatch.setattr(placement, "cuda_problems_in_bundles", check)
    plan = training_placement(workers=3, cpus_per_worker=4, use_gpu=True, capacity=SHIPPED)
    placement.wait_until_placed(plan, timeout_s=60, stage="train")
    assert checked == [(3, [0, 1, 2], 1.0)] and len(placed_at_once) == 1
    pool = scoring_placement(min_actors=2, max_actors=8, cpus=4, gpus=0.5, capacity=SHIPPED)
    placement.wait_until_placed(pool, timeout_s=60, stage="score")
    assert checked[1] == (2, [0, 1], 0.5) and len(placed_at_once) == 2  # the pool's first actors, their GPU share
    assert capsys.readouterr() == ("", "")


def test_a_node_that_cannot_run_cuda_ends_the_wait_with_its_line_and_the_group_is_removed(placed_at_once,
                                                                                       monkeypatch):
    from thorax_ray import placement
    from thorax_ray.node_check import CudaUnusable

    lines = ["node ip-10-0-1-23 (10.0.1.23): CUDA is not usable for this GPU job: no NVIDIA driver (libcuda.so.1 "
             "cannot be loaded)", "node ip-10-0-1-24 (10.0.1.24): CUDA is not usable for this GPU job: ..."]
    monkeypatch.setattr(placement, "cuda_problems_in_bundles", lambda *args, **kwargs: lines)
    plan = training_placement(workers=8, cpus_per_worker=4, use_gpu=True, capacity=SHIPPED)
    with pytest.raises(CudaUnusable) as error:
        placement.wait_until_placed(plan, timeout_s=60, stage="train")
    assert str(error.value) == lines[0] + " (and 1 more of the job's 8 GPU bundles)"
    assert len(placed_at_once) == 1  # given back all the same


def test_work_without_gpus_starts_no_check(placed_at_once, monkeypatch):
    from thorax_ray import placement

    monkeypatch.setattr(placement, "cuda_problems_in_bundles",
                        lambda *args, **kwargs: pytest.fail("a CUDA check for work without GPUs"))
    for plan in (training_placement(workers=2, cpus_per_worker=2, use_gpu=False, capacity=SHIPPED),
                 scoring_placement(min_actors=1, max_actors=1, cpus=1, gpus=0, capacity=SHIPPED),
                 cpu_task_placement("tasks", cpus=1, capacity=SHIPPED)):
        placement.wait_until_placed(plan, timeout_s=60, stage="x")
    assert len(placed_at_once) == 3


def test_the_wait_returns_once_the_given_back_units_show_up_free(placed_at_once, monkeypatch):
    """Ray gives a group back asynchronously and its view of free resources lags: the wait returns only once the
    view shows a unit free again (else Ray Data's start-up check, right after, saw "no available CPUs" on 2 CPUs
    and warned on the console), and gives up on that after FREED_TIMEOUT_S without failing the job."""
    import sys

    from thorax_ray import placement

    views = iter([{"CPU": 0.0}, {"CPU": 0.0}, {"CPU": 1.0}])
    asked = []
    monkeypatch.setattr(sys.modules["ray"], "available_resources", lambda: asked.append(1) or next(views))
    plan = scoring_placement(min_actors=1, max_actors=1, cpus=1, gpus=0, capacity=UNSTEERED)
    placement.wait_until_placed(plan, timeout_s=60, stage="score")
    assert len(asked) == 3 and len(placed_at_once) == 1
    monkeypatch.setattr(sys.modules["ray"], "available_resources", lambda: {"CPU": 0.0})
    assert placement.wait_until_freed(plan, timeout_s=0.3, poll_s=0.05) is False  # taken by others: not an error


def test_the_check_runs_in_each_bundle_of_a_placed_group_and_returns_the_nodes_lines(ray_local):
    """The real tasks in a real placement group on the session's Ray (CPU bundles: a local Ray has no GPU to
    fake, so the tasks ask for none; each still checks cuda:0 there, as on a GPU node): each bundle answers with
    what node_check says on this machine, and a check that does not answer in time names its bundle's node."""
    import socket

    from ray.util import placement_group, remove_placement_group

    from thorax_ray import node_check
    from thorax_ray.placement import cuda_problems_in_bundles

    group = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK")
    try:
        assert group.wait(timeout_seconds=60)
        here = node_check.problem_line()  # on this GPU-less machine: a line naming it (None on a working GPU)
        assert cuda_problems_in_bundles(group, range(2), gpus=0) == ([here, here] if here else [])
        late = cuda_problems_in_bundles(group, [1], gpus=0, timeout_s=0.001)
        assert len(late) == 1 and late[0].startswith(f"node {socket.gethostname()} (") and late[0].endswith(
            ": CUDA is not usable for this GPU job: its check (torch's import and a tensor op on cuda:0) did not "
            "answer within 0.001 s"), late
    finally:
        remove_placement_group(group)
