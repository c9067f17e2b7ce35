"""Batch scoring on Ray Data: probabilities, compact heatmaps of all 14 findings and boxes for every
image of a folder / prefix / manifest / prepared output, incremental per model, committed atomically.

    from thorax_ray.scoring import ScoreConfig, score, read_scores

    summary = score(ScoreConfig(checkpoint="runs/cnn", input="s3://bucket/incoming/", out="s3://bucket/scores"))
    frame = read_scores("s3://bucket/scores", model_id=summary.model_id)

Output layout and schema: `thorax_ray.scoring.output`; inputs: `thorax_ray.scoring.inputs`.
"""
from thorax_ray.checkpoint import checkpoint_model_id
from thorax_ray.scoring.config import ScoreConfig
from thorax_ray.scoring.inputs import InputError, ScoringInput, resolve_input
from thorax_ray.scoring.job import score
from thorax_ray.scoring.output import (FEATURES_METADATA_KEY, SCORES_METADATA_KEY, OutputSize, ScoresError,
                                       committed_files, committed_runs, output_size, read_file_metadata,
                                       read_quarantine, read_scores, score_schema, scored_index)
from thorax_ray.scoring.scorer import NO_METHOD, Scorer
from thorax_ray.scoring.summary import ScoreSummary

__all__ = [
    "FEATURES_METADATA_KEY",
    "InputError",
    "NO_METHOD",
    "OutputSize",
    "SCORES_METADATA_KEY",
    "ScoreConfig",
    "ScoreSummary",
    "Scorer",
    "ScoresError",
    "ScoringInput",
    "checkpoint_model_id",
    "committed_files",
    "committed_runs",
    "output_size",
    "read_file_metadata",
    "read_quarantine",
    "read_scores",
    "resolve_input",
    "score",
    "score_schema",
    "scored_index",
]
