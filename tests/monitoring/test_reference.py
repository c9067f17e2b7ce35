"""The validation reference: computed from validation rows, stored in a checkpoint that loads with
weights_only=True, read back; the training loop's gathering of it."""
import json

import numpy as np
import pytest

from tests.helpers import make_checkpoint
from thorax_ray.checkpoint import INFO_FILE, load_payload
from thorax_ray.labels import FINDINGS
from thorax_ray.models.predict import Predictions
from thorax_ray.monitoring.reference import MIN_ROWS, ValidationReference, feature_model_of, validation_reference
from thorax_ray.train.loop import reference_of


def validation_rows(n=500, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.beta(1, 6, size=(n, len(FINDINGS))).astype(np.float32), rng.normal(size=(n, dim)).astype(np.float32)


def test_the_reference_holds_deciles_counts_quantiles_and_the_feature_model():
    probabilities, features = validation_rows()
    stored = validation_reference(probabilities, features)
    reference = ValidationReference.from_dict(stored)
    assert reference.rows == 500 and reference.features.dim == 6
    for i, name in enumerate(FINDINGS):
        finding = reference.findings[name]
        assert len(finding.edges) == 9 and finding.counts.sum() == 500
        assert np.all(np.abs(finding.counts - 50) <= 1)
        assert finding.quantiles[0] == probabilities[:, i].min() and finding.quantiles[-1] == probabilities[:, i].max()
        assert finding.mean == pytest.approx(probabilities[:, i].mean(), rel=1e-6)


def test_too_few_rows_give_no_reference_and_bad_shapes_are_refused():
    probabilities, features = validation_rows(MIN_ROWS - 1)
    assert validation_reference(probabilities, features) is None
    with pytest.raises(ValueError, match=r"expected \(N, 14\)"):
        validation_reference(np.zeros((30, 3)))
    with pytest.raises(ValueError, match="29 feature rows for 30 validation rows"):
        validation_reference(np.zeros((30, 14)), np.zeros((29, 2)))


def test_a_checkpoint_carries_it_loadable_with_weights_only_and_readable_in_its_json(tmp_path):
    probabilities, features = validation_rows()
    make_checkpoint(tmp_path, payload={"validation_reference": validation_reference(probabilities, features)})
    payload = load_payload(str(tmp_path))  # torch.load(weights_only=True)
    model = feature_model_of(payload.validation_reference)
    assert model.rows == 500 and model.dim == 6
    readable = json.loads((tmp_path / INFO_FILE).read_text())["validation_reference"]
    assert readable["features"]["precision"] == "<tensor [6, 6] float32>"


def test_an_old_checkpoint_has_none():
    assert ValidationReference.from_dict(None) is None and feature_model_of(None) is None


def test_a_reference_of_another_format_is_refused_by_name():
    stored = validation_reference(*validation_rows())
    with pytest.raises(ValueError, match="format 2"):
        ValidationReference.from_dict({**stored, "format": 2})
    assert feature_model_of({**stored, "format": 2}) is None


def test_training_gathers_every_workers_features_in_the_order_of_its_predictions():
    probabilities, features = validation_rows(60)
    labels = np.zeros_like(probabilities)
    shares = [(Predictions([f"a{i}" for i in range(40)], labels[:40], probabilities[:40]), features[:40]),
              (Predictions([], labels[:0], probabilities[:0]), None),  # a worker with no validation rows
              (Predictions([f"b{i}" for i in range(20)], labels[40:], probabilities[40:]), features[40:])]
    gathered = Predictions.concatenate(share for share, _ in shares)
    stored = reference_of(gathered, shares)
    expected = validation_reference(probabilities, features)
    np.testing.assert_allclose(stored["features"]["mean"].numpy(), expected["features"]["mean"].numpy())
    shares[0] = (shares[0][0], None)  # a model that captured nothing: no feature model, the rest kept
    assert reference_of(gathered, shares)["features"] is None
