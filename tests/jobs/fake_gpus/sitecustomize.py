"""Test support for the fake autoscaling cluster of tests/jobs/test_submit.py, whose GPUs are Ray resources
only (Ray's fake multi-node provider), not devices. This folder is on the PYTHONPATH of every process that
cluster starts, so each imports this file at start-up. Once `ray.train.torch` is imported, its device is the
CPU and every TorchTrainer's process group is gloo: GPU workers and actors are scheduled exactly as on a real
GPU cluster, and the arithmetic stays on the CPU; a scoring actor's check that CUDA works on its node
(thorax_ray.node_check, which would rightly refuse a GPU that is a Ray resource only) is stood in for too.
Nothing of this is in the package."""
import importlib.abc
import importlib.machinery
import sys


def _fake_gpu_devices(module) -> None:
    import torch

    make_trainer, make_config = module.TorchTrainer, module.TorchConfig

    def gloo_trainer(*args, **kwargs):
        kwargs["torch_config"] = make_config(backend="gloo")
        return make_trainer(*args, **kwargs)

    module.TorchTrainer = gloo_trainer
    module.get_device = lambda: torch.device("cpu")


def _no_cuda_check(module) -> None:
    module.require_cuda_if_ray_gave_a_gpu = lambda: None


PATCHES = {"ray.train.torch": _fake_gpu_devices, "thorax_ray.node_check": _no_cuda_check}


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
