"""The vectorised Integrated Gradients against Captum's IntegratedGradients (the reference): the same
quadrature, and for every target the same attributions to 1e-5 across MLP sizes, batch sizes (1 included),
baselines and integration methods; memory chunks change nothing; bad input is one clear error."""
from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters

from thorax_ray.attribution.vectorised_ig import QUADRATURE_METHODS, integrated_gradients, quadrature
from thorax_ray.labels import NUM_FINDINGS
from thorax_ray.models import MetadataFeatures, create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def captum_all_targets(model, inputs, *, baselines=0.0, n_steps=32, method="gausslegendre"):
    """(N, K, F): Captum's IntegratedGradients run once per target."""
    ig = IntegratedGradients(model)
    with torch.no_grad():
        targets = model(inputs).shape[1]
    return torch.stack([ig.attribute(inputs, baselines=baselines, target=t, n_steps=n_steps, method=method).detach()
                        for t in range(targets)], dim=1)


def mlp(features=("age", "sex", "view_position"), seed=0, **kwargs):
    torch.manual_seed(seed)
    return create_model("mlp", metadata_features=MetadataFeatures(features), **kwargs).eval()


@pytest.mark.parametrize("method", QUADRATURE_METHODS)
@pytest.mark.parametrize("n_steps", [2, 5, 32])
def test_quadrature_is_captums(method, n_steps):
    step_sizes, alphas = approximation_parameters(method)
    assert quadrature(method, n_steps) == (alphas(n_steps), step_sizes(n_steps))


def test_quadrature_rejects_unknown_methods_and_too_few_steps():
    with pytest.raises(ValueError, match=r"^unknown integration method 'simpson'; known: gausslegendre, riemann_left"):
        quadrature("simpson", 8)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 2 for riemann_left, got 1"):
        quadrature("riemann_left", 1)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1 for gausslegendre, got 0"):
        quadrature("gausslegendre", 0)
    assert len(quadrature("gausslegendre", 1)[0]) == 1


@pytest.mark.parametrize("features, hidden, depth", [
    (("age", "sex", "view_position"), 64, 2),  # the default MLP: 9 features
    (("age", "sex", "view_position", "follow_up"), 64, 2),  # 11 features (the demo's)
    (("age",), 8, 1),
    (("age", "sex", "view_position", "follow_up", "original_size", "pixel_spacing"), 32, 3),
])
@pytest.mark.parametrize("batch", [1, 7, 33])
def test_equals_captum_for_every_target(features, hidden, depth, batch):
    model = mlp(features, hidden=hidden, depth=depth)
    inputs = torch.randn(batch, model.in_dim) * 2
    expected = captum_all_targets(model, inputs)
    got = integrated_gradients(model, inputs)
    assert got.shape == (batch, NUM_FINDINGS, model.in_dim) and got.dtype == torch.float32
    assert not got.requires_grad
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert got.abs().max() > 1e-2  # not trivially zero


@pytest.mark.parametrize("kind", ["scalar", "row", "one_row", "per_input"])
def test_equals_captum_with_other_baselines(kind):
    model = mlp(("age", "sex", "view_position", "follow_up"), seed=1)
    inputs = torch.randn(5, model.in_dim)
    baselines = {"scalar": 0.5, "row": torch.linspace(-1, 1, model.in_dim),
                 "one_row": torch.randn(1, model.in_dim), "per_input": torch.randn(5, model.in_dim)}[kind]
    reference = baselines[None] if kind == "row" else baselines  # Captum takes (1, F), not (F,)
    expected = captum_all_targets(model, inputs, baselines=reference)
    torch.testing.assert_close(integrated_gradients(model, inputs, baselines=baselines), expected,
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", QUADRATURE_METHODS)
def test_equals_captum_with_every_integration_method(method):
    model = mlp(seed=2)
    inputs = torch.randn(4, model.in_dim)
    expected = captum_all_targets(model, inputs, n_steps=9, method=method)
    torch.testing.assert_close(integrated_gradients(model, inputs, n_steps=9, method=method), expected,
                               atol=1e-5, rtol=0)


def test_completeness_and_chunks():
    model = mlp(seed=3)
    inputs = torch.randn(9, model.in_dim)
    whole = integrated_gradients(model, inputs, n_steps=64)
    for max_rows in (1, 64, 130):  # one input per pass (fewer rows than steps), 1 and 2 inputs per pass
        torch.testing.assert_close(integrated_gradients(model, inputs, n_steps=64, max_rows=max_rows),
                                   whole, atol=1e-6, rtol=0)
    with torch.no_grad():
        delta = model(inputs) - model(torch.zeros_like(inputs))
    torch.testing.assert_close(whole.sum(-1), delta, atol=2e-2, rtol=2e-2)  # sum over features = logit change


def test_fixed_rows_are_held_constant():
    """A fixed tensor travels row by row and is not interpolated: f(x, c) = w * (x . c)^2 / 2 per target."""
    weights = torch.linspace(0.5, 2.0, 3)

    def forward(rows, coefficients):
        return weights * (rows * coefficients).sum(-1, keepdim=True) ** 2 / 2

    inputs, coefficients = torch.randn(4, 5), torch.randn(4, 5)
    got = integrated_gradients(forward, inputs, (coefficients,), n_steps=8)
    # IG from 0: grad = w (x.c) c alpha, integral of alpha = 1/2 (Gauss-Legendre is exact) -> w (x.c) c x / 2
    dot = (inputs * coefficients).sum(1)
    expected = weights[None, :, None] * (dot[:, None, None] * coefficients[:, None, :] * inputs[:, None, :]) / 2
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(integrated_gradients(forward, inputs, (coefficients,), n_steps=8, max_rows=8),
                               got, atol=1e-6, rtol=0)  # one input per pass


def test_parameters_keep_no_gradient():
    model = mlp()
    integrated_gradients(model, torch.randn(3, model.in_dim))
    assert all(p.grad is None for p in model.parameters())


def test_bad_input_is_one_clear_error():
    model = mlp()
    forward = model
    with pytest.raises(ValueError, match=r"inputs must be \(N, F\), got \(9,\)"):
        integrated_gradients(forward, torch.zeros(9))
    with pytest.raises(ValueError, match=r"baselines must be a number or of shape \(9,\), \(1, 9\) or \(2, 9\)"):
        integrated_gradients(forward, torch.zeros(2, 9), baselines=torch.zeros(3, 9))
    with pytest.raises(ValueError, match="fixed tensors must have 2 rows"):
        integrated_gradients(forward, torch.zeros(2, 9), (torch.zeros(3, 4),))
    with pytest.raises(ValueError, match="max_rows must be >= 1"):
        integrated_gradients(forward, torch.zeros(2, 9), max_rows=0)
