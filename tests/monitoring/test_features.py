"""The penultimate features are the input of each model's classifier, captured without an extra pass."""
import torch

from thorax_ray.models import MetadataFeatures, create_model
from thorax_ray.monitoring.features import penultimate_features


def test_a_cnn_gives_its_pooled_features_and_the_hook_goes_away(one_torch_thread):
    model = create_model("small_cnn").eval()
    images = torch.randn(3, 1, 64, 64)
    with torch.no_grad(), penultimate_features(model) as captured:
        model(images)
        model(images[:1])
    with torch.no_grad():
        pooled = model.pool(model.features(images))
        model(images)  # outside the block: not captured
    assert len(captured) == 4
    torch.testing.assert_close(captured.tensor()[:3], pooled)
    assert not model.classifier._forward_pre_hooks


def test_fusion_gives_image_and_metadata_features_side_by_side(one_torch_thread):
    features = MetadataFeatures(("age", "sex", "view_position"))
    model = create_model("fusion", metadata_features=features).eval()
    images, metadata = torch.randn(2, 1, 64, 64), torch.randn(2, features.dim)
    with torch.no_grad(), penultimate_features(model) as captured:
        model(images, metadata)
    assert captured.array().shape == (2, model.image_dim + model.metadata_dim)


def test_the_metadata_mlp_gives_its_embedding():
    features = MetadataFeatures(("age", "sex", "view_position"))
    model = create_model("mlp", metadata_features=features).eval()
    metadata = torch.randn(5, features.dim)
    with torch.no_grad(), penultimate_features(model) as captured:
        model(metadata)
    with torch.no_grad():
        torch.testing.assert_close(captured.tensor(), model.embed(metadata))


def test_a_model_without_a_classifier_captures_nothing():
    model = torch.nn.Linear(3, 2)
    with penultimate_features(model) as captured:
        model(torch.zeros(1, 3))
    assert captured.array() is None
