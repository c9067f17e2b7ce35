"""Hyperparameter search with Ray Tune over the training configuration: YAML search spaces
(`space`), the per-trial Ray Train run (`trainable`), the sweep itself (`sweep`) and its outputs
(`results`). Command line: `jobs/tune.py`; grammar: `tune_spaces/README.md`."""
