"""Monitoring of scheduled scoring: does tonight's batch look like the data the model was validated on?

- `features`: the penultimate features of a model (the input of its final `classifier` layer), captured
  during a forward pass that runs anyway (validation in training, scoring).
- `reference`: the validation reference a training checkpoint carries (`CheckpointPayload.validation_reference`):
  per-finding probability bins and quantiles, and the out-of-distribution model of the features.
- `drift`: population stability index and Kolmogorov-Smirnov statistic of a batch against the reference, with
  the thresholds that call a finding drifted.
- `ood`: the per-image out-of-distribution score (Mahalanobis distance of the features, Ledoit-Wolf
  covariance) and its threshold, chosen on validation.
- `run`: one committed scoring run's monitoring record (`OUT/monitoring/<run_id>.json`).
- `report`: those records per night, as a table and a plot over time (`jobs/monitor.py`).

Nothing is imported here: each module is imported where it is used (the scorer needs `ood` and `features`
only).
"""
