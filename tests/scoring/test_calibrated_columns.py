"""The calibrated probability columns of the scores: the checkpoint's calibration applied beside the raw
probabilities (the Scorer run in-process, without Ray), a raw copy for checkpoints without one, older score
files read alongside, and the gate's thresholds on both scales."""
import os

import numpy as np
import pyarrow as pa
import pytest

from tests.helpers import make_checkpoint, shifting_calibration, write_scores_commit
from thorax_ray.calibration import apply_calibration, describe_calibration
from thorax_ray.checkpoint import checkpoint_model_id
from thorax_ray.data.decode import decode_image
from thorax_ray.labels import FINDING_COLUMNS, FINDINGS
from thorax_ray.scoring import ScoreConfig, read_scores
from thorax_ray.scoring.gate import resolve_gate
from thorax_ray.scoring.output import CALIBRATED_COLUMNS, score_schema, write_table_file
from thorax_ray.scoring.scorer import NO_METHOD, Scorer, ScorerSettings

SIZE = 64


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The same model twice: with a calibration and without one (written before calibration existed)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    calibration = shifting_calibration()
    make_checkpoint(folder / "with", size=SIZE, payload={"calibration": calibration})
    make_checkpoint(folder / "without", size=SIZE)
    return str(folder / "with"), str(folder / "without"), calibration


def _score(checkpoint: str, paths: list[str]) -> pa.Table:
    table = pa.table({
        "image_index": [os.path.basename(p) for p in paths], "path": paths,
        "image": [decode_image(open(p, "rb").read(), SIZE).pixels.tobytes() for p in paths],
        "width": [SIZE] * len(paths), "height": [SIZE] * len(paths), "ok": [True] * len(paths),
        "stage": [""] * len(paths), "reason": [""] * len(paths)})
    settings = ScoreConfig(checkpoint=checkpoint, input="-", out="-")
    scorer = Scorer(ScorerSettings.from_config(
        settings, checkpoint_dir=checkpoint, model_id=checkpoint_model_id(checkpoint), method=NO_METHOD,
        stored_size=SIZE, run_id="r", batch_date="2024-01-01", box_min_probability=None))
    return scorer(table)


def test_scorer_writes_calibrated_columns_beside_the_raw_ones(checkpoints, synthetic_small):
    with_calibration, without, calibration = checkpoints
    paths = sorted(os.path.join(folder, name) for folder, _, names in os.walk(synthetic_small)
                   for name in names if name.endswith(".png"))[:6]
    names = score_schema(maps=False, feature_attributions=False).names
    first = names.index(FINDING_COLUMNS[0])
    assert names[first:first + 28] == [*FINDING_COLUMNS, *CALIBRATED_COLUMNS]  # right after the raw columns
    calibrated_table, plain_table = _score(with_calibration, paths), _score(without, paths)
    raw = np.column_stack([calibrated_table.column(c).to_numpy() for c in FINDING_COLUMNS])
    assert np.array_equal(raw, np.column_stack([plain_table.column(c).to_numpy() for c in FINDING_COLUMNS]))
    calibrated = np.column_stack([calibrated_table.column(c).to_numpy() for c in CALIBRATED_COLUMNS])
    assert calibrated.dtype == np.float32
    expected = apply_calibration(calibration, raw.astype(np.float64))
    assert np.allclose(calibrated, expected, atol=1e-6) and not np.allclose(calibrated, raw, atol=1e-3)
    copied = np.column_stack([plain_table.column(c).to_numpy() for c in CALIBRATED_COLUMNS])
    assert np.array_equal(copied, raw)  # no calibration in the checkpoint: the raw probabilities, as they are


def test_read_scores_reads_older_files_alongside_and_says_how_they_were_calibrated(tmp_path):
    out = str(tmp_path / "scores")
    description = describe_calibration(shifting_calibration())
    old = pa.table({"image_index": ["a"], "model_id": ["m"], "mass": pa.array([0.2], pa.float32())})
    new = pa.table({"image_index": ["b"], "model_id": ["m"], "mass": pa.array([0.4], pa.float32()),
                    "mass_calibrated": pa.array([0.1], pa.float32())})
    for run_id, table, extra in (("20260101T000000Z-aaaaaa", old, {}),
                                 ("20260102T000000Z-bbbbbb", new, {"calibration": description})):
        path = f"scores/batch_date=2026-01-01/run_id={run_id}/part-0.parquet"
        size = write_table_file(table, os.path.join(out, path))
        write_scores_commit(out, {"run_id": run_id, "model_id": "m", **extra,
                                  "files": [{"path": path, "rows": 1, "bytes": size}]})
    frame = read_scores(out).set_index("image_index")
    assert np.isnan(frame.loc["a", "mass_calibrated"]) and frame.loc["b", "mass_calibrated"] == pytest.approx(0.1)
    assert frame.attrs["calibration"]["applied"] is True and frame.attrs["calibration"]["method"] == "platt"


def test_gate_compares_raw_probabilities_and_gives_the_thresholds_on_the_calibrated_scale():
    calibration = shifting_calibration()
    thresholds = {f: 0.3 for f in FINDINGS}
    thresholds["Hernia"] = None
    points = {"rule": "youden", "thresholds": thresholds,
              "support": {f: {"positives": 5, "negatives": 50, "bootstrapped": True} for f in FINDINGS}}
    gate = resolve_gate("calibrated", points, epoch=2, calibration=calibration)
    assert gate.thresholds[0] == pytest.approx(0.3)  # the raw scale: the one the thresholds were chosen on
    described = gate.description
    assert described["compares"] == "the raw probability columns" and described["support"]["Mass"]["positives"] == 5
    mapped = apply_calibration(calibration, np.array([gate.thresholds]))[0]
    assert [described["thresholds_calibrated"][f] for f in FINDINGS] == pytest.approx(list(mapped))
    uncalibrated = resolve_gate("calibrated", points).description["thresholds_calibrated"]
    assert uncalibrated == described["thresholds"]  # no calibration: the same numbers
