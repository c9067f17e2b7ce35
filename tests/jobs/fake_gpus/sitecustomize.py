"""Test support for the fake autoscaling cluster of tests/jobs/test_submit.py, whose GPUs are Ray resources
only (Ray's fake multi-node provider), not devices. This folder is on the PYTHONPATH of every process that
cluster starts, so each imports this file at start-up. Once `ray.train.torch` is imported, its device is the
CPU and every TorchTrainer's process group is gloo: GPU workers and actors are scheduled exactly as on a real
GPU cluster, and the arithmetic stays on the CPU. The check that CUDA works on a node (thorax_ray.node_check's
`cuda_problem`, which would rightly refuse a GPU that is a Ray resource only) is stood in for too: CUDA works,
except on the nodes that have the Ray resource named by THORAX_FAKE_CUDA_UNUSABLE_ON (e.g. `thorax_train`;
a job sets it in its runtime env), where it reports a failing tensor op as a real node with a broken GPU would.
Nothing of this is in the package."""
import importlib.abc
import importlib.machinery
import os
import sys

FAKE_CUDA_UNUSABLE_ON = "THORAX_FAKE_CUDA_UNUSABLE_ON"
FAKE_CUDA_ERROR = "CUDA error: unknown error (tests/jobs/fake_gpus: CUDA made unusable on nodes with {resource})"


def _fake_gpu_devices(module) -> None:
    import torch

    make_trainer, make_config = module.TorchTrainer, module.TorchConfig

    def gloo_trainer(*args, **kwargs):
        kwargs["torch_config"] = make_config(backend="gloo")
        return make_trainer(*args, **kwargs)

    module.TorchTrainer = gloo_trainer
    module.get_device = lambda: torch.device("cpu")


def _this_node_has(resource: str) -> bool:
    """Whether this Ray process's node has `resource` (False outside Ray)."""
    import ray

    if not ray.is_initialized():
        return False
    node_id = ray.get_runtime_context().get_node_id()
    return any(node["NodeID"] == node_id and node["Resources"].get(resource, 0) > 0 for node in ray.nodes())


def _fake_cuda(module) -> None:
    def cuda_problem(device):
        resource = os.environ.get(FAKE_CUDA_UNUSABLE_ON)
        if resource and _this_node_has(resource):
            return f"a tensor op on {device} failed: {FAKE_CUDA_ERROR.format(resource=resource)}"
        return None

    module.cuda_problem = cuda_problem


PATCHES = {"ray.train.torch": _fake_gpu_devices, "thorax_ray.node_check": _fake_cuda}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name not in PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            PATCHES[name](module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PatchAfterImport())
