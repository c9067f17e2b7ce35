"""Hyperparameter search with Ray Tune over the training configuration: YAML search spaces
(`space`), the per-trial Ray Train run (`trainable`), the sweep itself (`sweep`) and its outputs
(`results`). Command line: `jobs/tune.py`; grammar: `tune_spaces/README.md`."""
from thorax_ray.tune.space import SearchSpace, TuneSettings, load_space, parse_space, resolve

__all__ = ["SearchSpace", "TuneSettings", "load_space", "parse_space", "resolve"]
