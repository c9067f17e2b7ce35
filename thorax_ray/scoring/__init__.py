"""Batch scoring on Ray Data: probabilities, compact heatmaps of all 14 findings and boxes for every
image of a folder / prefix / manifest / prepared output, incremental per model, committed atomically.

    from thorax_ray.scoring import ScoreConfig, read_scores
    from thorax_ray.scoring.score import score

    summary = score(ScoreConfig(checkpoint="runs/cnn", input="s3://bucket/incoming/", out="s3://bucket/scores"))
    frame = read_scores("s3://bucket/scores", model_id=summary.model_id)

Output layout and schema: `thorax_ray.scoring.output`; inputs: `thorax_ray.data.inputs`.
"""
from thorax_ray.scoring.config import ScoreConfig
from thorax_ray.scoring.output import read_scores
from thorax_ray.scoring.scorer import NO_METHOD

__all__ = [
    "NO_METHOD",
    "ScoreConfig",
    "read_scores",
]
