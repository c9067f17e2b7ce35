"""evaluate_checkpoint with test-time augmentation: the AUROC of the TTA mean, "tta" recorded, a metadata-only
model refused (its data replaced by a stand-in of pyarrow batches, no Ray)."""
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.helpers import make_checkpoint
from thorax_ray.data.preprocess import normalise_images, preprocessing_contract
from thorax_ray.evaluation import checkpoint as evaluation_checkpoint
from thorax_ray.labels import FINDING_COLUMNS
from thorax_ray.metrics import per_class_auroc
from thorax_ray.models.tta import tta_probabilities

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE, STORED = 32, 40


def _rows(n: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, STORED, STORED), dtype=np.uint8)
    labels = rng.integers(0, 2, size=(n, len(FINDING_COLUMNS)))
    labels[0], labels[1] = 0, 1  # every finding has positives and negatives
    table = pa.table({"image_index": [f"{i:08d}_000.png" for i in range(n)], "image": [p.tobytes() for p in pixels],
                      **{column: labels[:, j] for j, column in enumerate(FINDING_COLUMNS)}})
    return pixels, labels, table


def _stand_in(monkeypatch, table: pa.Table) -> None:
    rows = SimpleNamespace(iter_batches=lambda batch_size, **_: (
        pa.Table.from_batches([batch]) for batch in table.to_batches(max_chunksize=batch_size)))
    source = SimpleNamespace(split_hash="h", stored_size=STORED, dataset=lambda split, images: rows)
    monkeypatch.setattr(evaluation_checkpoint, "open_source", lambda config: source)


@pytest.mark.parametrize("kind", ["none", "hflip", "tencrop"])
def test_evaluate_checkpoint_with_tta_measures_the_tta_mean_and_records_it(kind, tmp_path, monkeypatch):
    model = make_checkpoint(tmp_path, size=SIZE)
    pixels, labels, table = _rows()
    _stand_in(monkeypatch, table)
    result = evaluation_checkpoint.evaluate_checkpoint(str(tmp_path), "data", "test", batch_size=10, tta=kind)
    images = normalise_images(torch.from_numpy(pixels).unsqueeze(1), preprocessing_contract(SIZE),
                              device=torch.device("cpu"))
    with torch.no_grad():
        expected = per_class_auroc(labels, tta_probabilities(model, images, kind=kind).numpy())
    assert result["n_images"] == 24 and result["auroc"] == pytest.approx(expected)
    assert result["tta"]["kind"] == kind and len(result["tta"]["views"]) == {"none": 1, "hflip": 2, "tencrop": 10}[kind]


def test_evaluate_checkpoint_refuses_tta_for_a_metadata_only_model(tmp_path, monkeypatch):
    make_checkpoint(tmp_path, name="mlp", size=SIZE)
    monkeypatch.setattr(evaluation_checkpoint, "open_source", lambda config: pytest.fail("data opened"))
    with pytest.raises(ValueError, match=r"^--tta tencrop: model 'mlp' takes metadata only"):
        evaluation_checkpoint.evaluate_checkpoint(str(tmp_path), "data", "test", tta="tencrop")
