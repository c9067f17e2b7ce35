"""The drift flag end to end without Ray: a tiny CNN trained on synthetic images of difficulty 0.5, its
checkpoint carrying the validation reference as training stores it, the scoring actor (`Scorer`) giving
probabilities and ood_scores, and the run's monitoring record. A batch of another difficulty raises the flag;
a batch drawn like the validation images does not."""
import numpy as np
import pytest

from tests.helpers import make_checkpoint
from tests.monitoring.synthetic_batches import SIZE, reference_of_images, render, scorer_table, train_tiny_cnn
from thorax_ray.checkpoint import checkpoint_model_id, load_payload
from thorax_ray.labels import FINDING_COLUMNS
from thorax_ray.monitoring.run import monitor_batch, raised
from thorax_ray.scoring import ScoreConfig
from thorax_ray.scoring.scorer import Scorer, ScorerSettings

pytestmark = pytest.mark.slow  # trains a model (about 20 s on one core)

TRAINED_DIFFICULTY = 0.5


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, one_torch_thread):
    _, pixels, labels = render(600, seed=1, difficulty=TRAINED_DIFFICULTY)
    model = train_tiny_cnn(pixels[:400], labels[:400])
    folder = tmp_path_factory.mktemp("drift-checkpoint")
    make_checkpoint(folder, model=model, size=SIZE,
                    payload={"validation_reference": reference_of_images(model, pixels[400:])})
    return str(folder)


def scored(checkpoint: str, names, pixels, method: str = "none"):
    settings = ScorerSettings.from_config(
        ScoreConfig(checkpoint=checkpoint, input="-", out="-"), checkpoint_dir=checkpoint,
        model_id=checkpoint_model_id(checkpoint), method=method, stored_size=SIZE, run_id="r",
        batch_date="2024-01-01", box_min_probability=None)
    table = Scorer(settings)(scorer_table(names, pixels))
    probabilities = np.stack([table.column(c).to_numpy() for c in FINDING_COLUMNS], axis=1)
    return probabilities, table.column("ood_score").to_numpy(), table.column("metadata_source").to_pylist()


def record_of(checkpoint: str, *, seed: int, difficulty: float, method: str = "none") -> dict:
    names, pixels, _ = render(150, seed=seed, difficulty=difficulty)
    probabilities, ood, sources = scored(checkpoint, names, pixels, method)
    return monitor_batch(probabilities, ood, sources, load_payload(checkpoint).validation_reference)


@pytest.mark.parametrize("difficulty", [2.0, 0.0])
def test_a_batch_of_another_difficulty_raises_the_drift_flag(checkpoint, difficulty):
    record = record_of(checkpoint, seed=9, difficulty=difficulty)
    assert raised(record)
    assert len(record["drifted"]) >= 5, record["drifted"]
    assert all(record["findings"][name]["psi"] >= 0.25 for name in record["drifted"])


def test_subtler_and_noisier_images_are_out_of_distribution(checkpoint):
    record = record_of(checkpoint, seed=9, difficulty=2.0)
    assert record["ood"]["alarm"] and record["ood"]["share"] > 0.2


def test_a_batch_drawn_like_validation_does_not_raise_it(checkpoint):
    record = record_of(checkpoint, seed=8, difficulty=TRAINED_DIFFICULTY)
    assert not raised(record), (record["drifted"], record["ood"])
    assert record["ood"]["share"] < 0.05
    assert record["metadata_sources"] == {"csv": 150}


def test_the_one_forward_maps_pass_gives_the_same_ood_scores(checkpoint):
    """fast_cam's pass captures the features; method none makes the pass itself: the same scores."""
    names, pixels, _ = render(16, seed=8, difficulty=TRAINED_DIFFICULTY)
    _, plain, _ = scored(checkpoint, names, pixels, "none")
    _, from_maps, _ = scored(checkpoint, names, pixels, "fast_cam")
    np.testing.assert_allclose(from_maps, plain, rtol=1e-5)


def test_without_a_reference_ood_score_is_null(tmp_path):
    make_checkpoint(tmp_path, size=SIZE)
    names, pixels, _ = render(4, seed=8, difficulty=TRAINED_DIFFICULTY)
    _, ood, _ = scored(str(tmp_path), names, pixels)
    assert np.isnan(ood.astype(float)).all()
