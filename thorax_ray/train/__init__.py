"""Distributed training on Ray Train: typed config, data sources, the per-worker loop, checkpoints."""
