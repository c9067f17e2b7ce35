"""`metadata_ig`, vectorised, against its Captum reference (`CaptumMetadataIntegratedGradients`, Captum's
IntegratedGradients once per target, as `metadata_ig` ran before): the same attributions to 1e-5 and the same
logits for the MLP and the fusion model, the same options, and the scorer's output for the MLP unchanged."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.helpers import make_checkpoint
from thorax_ray.attribution import get_method, gradients
from thorax_ray.attribution.gradients import CaptumMetadataIntegratedGradients, MetadataIntegratedGradients
from thorax_ray.checkpoint import checkpoint_model_id
from thorax_ray.labels import FINDING_COLUMNS, NUM_FINDINGS
from thorax_ray.models import MetadataFeatures, create_model
from thorax_ray.scoring import ScoreConfig
from thorax_ray.scoring.scorer import Scorer, ScorerSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FOLLOW_UP = ("age", "sex", "view_position", "follow_up")  # 11 features, the demo's MLP


def assert_same(result, reference):
    assert result.method == reference.method == "metadata_ig"
    assert result.feature_names == reference.feature_names
    assert result.feature_attributions.shape == reference.feature_attributions.shape
    assert result.feature_attributions.dtype == reference.feature_attributions.dtype == torch.float32
    torch.testing.assert_close(result.feature_attributions, reference.feature_attributions, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.logits, reference.logits, atol=0, rtol=0)


def test_metadata_ig_is_registered_as_the_vectorised_method():
    assert get_method("metadata_ig") is MetadataIntegratedGradients
    assert issubclass(CaptumMetadataIntegratedGradients, MetadataIntegratedGradients)  # the same options


@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("options", [{}, {"n_steps": 8, "method": "riemann_trapezoid"}])
def test_mlp_equals_captum(batch, options):
    torch.manual_seed(0)
    model = create_model("mlp", metadata_features=MetadataFeatures(FOLLOW_UP)).eval()
    features = torch.randn(batch, model.in_dim)
    result = get_method("metadata_ig")(model, **options).attribute(features=features)
    assert result.feature_attributions.shape == (batch, NUM_FINDINGS, 11)
    assert_same(result, CaptumMetadataIntegratedGradients(model, **options).attribute(features=features))


def test_fusion_equals_captum_with_the_images_held_fixed():
    torch.manual_seed(0)
    model = create_model("fusion", backbone="small_cnn", metadata_features=MetadataFeatures(("age", "sex"))).eval()
    images, features = torch.randn(3, 1, 32, 32), torch.randn(3, 5)
    result = get_method("metadata_ig")(model, n_steps=6, internal_batch_size=6).attribute(images, features)
    assert result.maps is None and result.feature_attributions.shape == (3, NUM_FINDINGS, 5)
    assert_same(result, CaptumMetadataIntegratedGradients(model, n_steps=6).attribute(images, features))


def test_internal_batch_size_bounds_the_rows_per_pass(monkeypatch):
    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    real = gradients.integrated_gradients
    monkeypatch.setattr(gradients, "integrated_gradients", spy)
    model = create_model("mlp").eval()
    get_method("metadata_ig")(model, internal_batch_size=64).attribute(features=torch.randn(2, model.in_dim))
    assert seen["max_rows"] == 64
    get_method("metadata_ig")(model).attribute(features=torch.randn(2, model.in_dim))
    assert seen["max_rows"] == gradients.DEFAULT_MAX_ROWS


def test_options_are_checked_when_the_method_is_built():
    model = create_model("mlp")
    with pytest.raises(ValueError, match="unknown integration method 'simpson'"):
        get_method("metadata_ig")(model, method="simpson")
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        get_method("metadata_ig")(model, n_steps=0)
    with pytest.raises(ValueError, match="internal_batch_size must be >= 1"):
        get_method("metadata_ig")(model, internal_batch_size=0)
    with pytest.raises(TypeError):
        get_method("metadata_ig")(model, baselines=1.0)  # zeros, as before: no new option


def test_training_mode_restored_and_no_parameter_gradients():
    torch.manual_seed(0)
    model = create_model("mlp", dropout=0.5).train()
    features = torch.randn(4, model.in_dim)
    result = get_method("metadata_ig")(model).attribute(features=features)
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(result.logits, model.eval()(features))  # dropout off during attribution


@pytest.mark.slow  # a fresh interpreter: nothing imported before
def test_metadata_ig_imports_neither_dynamo_nor_sympy_nor_captum():
    """Their imports cost a scoring actor seconds on its first batch (see thorax_ray/attribution/vectorised_ig.py)."""
    code = ("import sys, torch\n"
            "from thorax_ray.attribution import get_method\n"
            "from thorax_ray.models import create_model\n"
            "model = create_model('mlp')\n"
            "get_method('metadata_ig')(model).attribute(features=torch.randn(3, model.in_dim))\n"
            "print(sorted(m for m in ('torch._dynamo', 'sympy', 'captum') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


# ----- the scorer -------------------------------------------------------------------------------------


def _metadata_table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ages = rng.integers(1, 95, n).astype(float)
    ages[::7] = np.nan  # missing ages encode as the indicator
    return pa.table({
        "image_index": [f"{i:08d}_000.png" for i in range(n)], "path": [f"/x/{i}.png" for i in range(n)],
        "metadata_source": ["csv"] * n, "age_years": ages, "sex": rng.choice(["M", "F", "?"], n).tolist(),
        "view_position": rng.choice(["PA", "AP", "LL", None], n).tolist(), "follow_up": rng.integers(0, 30, n),
        "width": [1024] * n, "height": [1024] * n, "ok": [True] * n, "stage": [""] * n, "reason": [""] * n})


def test_scorer_output_for_the_mlp_is_unchanged(tmp_path):
    """The same Scorer on the same rows, with `metadata_ig` and with the Captum path it replaced."""
    make_checkpoint(tmp_path / "mlp", name="mlp", metadata_features=MetadataFeatures(FOLLOW_UP))
    ckpt = str(tmp_path / "mlp")
    settings = ScorerSettings.from_config(
        ScoreConfig(checkpoint=ckpt, input="-", out="-"), checkpoint_dir=ckpt, model_id=checkpoint_model_id(ckpt),
        method="metadata_ig", stored_size=64, run_id="r", batch_date="2024-01-01", box_min_probability=None)
    scorer = Scorer(settings)
    assert type(scorer.method) is MetadataIntegratedGradients
    table = _metadata_table(40)
    new = scorer(table)
    scorer.method = CaptumMetadataIntegratedGradients(scorer.method.model)
    old = scorer(table)

    assert new.schema == old.schema
    timing = {"_compute_s", "_model_s", "scored_at"}
    for name in new.column_names:
        if name in timing or name == "feature_attributions":
            continue
        assert new.column(name).equals(old.column(name)), name
    for column in FINDING_COLUMNS:
        assert np.isfinite(new.column(column).to_numpy()).all()

    def values(result: pa.Table) -> np.ndarray:
        return np.stack([np.frombuffer(v, dtype="<f4").reshape(NUM_FINDINGS, 11)
                         for v in result.column("feature_attributions").to_pylist()])

    np.testing.assert_allclose(values(new), values(old), atol=1e-5, rtol=0)
    assert np.abs(values(new)).max() > 1e-3
