"""Distributed training on Ray Train: typed config, per-epoch feeds, the per-worker loop, the TorchTrainer."""
