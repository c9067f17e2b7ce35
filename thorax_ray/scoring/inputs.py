"""What scoring's `--input` can be: a folder or s3:// prefix of new files (with or without a metadata
CSV), a manifest or list Parquet file, or a prepared output, resolved once on the driver into one row per
input file by the data stage's one resolver (thorax_ray.data.inputs, whose docstring lists what each kind
gives). `ScoringInput` is its typed source, `InputError` its error."""
from __future__ import annotations

from thorax_ray.data.inputs import InputError, InputSource, resolve_input

ScoringInput = InputSource

__all__ = ["InputError", "ScoringInput", "resolve_input"]
