"""The classifier head runs in float32 under bf16 autocast (training, validation and scoring all run the model
under autocast on GPUs; CPU bf16 autocast stands in here): float32 logits, finely resolved probabilities, and
the same state_dict layout as nn.Linear."""
import torch

from thorax_ray.models import MetadataFeatures, create_model
from thorax_ray.models.head import Float32Linear


def test_float32_head_under_bf16_autocast_keeps_probabilities_fine():
    torch.manual_seed(0)
    head = Float32Linear(256, 14)
    plain = torch.nn.Linear(256, 14)
    plain.load_state_dict(head.state_dict())  # same parameters, same keys
    features = torch.randn(4096, 256) * 0.05
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fine, coarse = head(features), plain(features)
    assert fine.dtype == torch.float32 and coarse.dtype == torch.bfloat16
    distinct = lambda logits: len(torch.unique(torch.sigmoid(logits.float())[:, 0]))  # noqa: E731
    assert distinct(fine) > 4 * distinct(coarse)  # 4,073 vs 728 of 4,096 rows
    torch.testing.assert_close(fine, torch.nn.functional.linear(features, head.weight, head.bias))


def test_every_model_ends_in_a_float32_head():
    features = MetadataFeatures(("age", "sex", "view_position"))
    for name in ("small_cnn", "mlp", "fusion"):
        backbone = {"backbone": "small_cnn"} if name == "fusion" else {}
        model = create_model(name, metadata_features=features, **backbone)
        assert isinstance(model.classifier, Float32Linear), name
        model.eval()
        images = torch.rand(2, 1, 64, 64) if model.spec.uses_images else None
        feats = torch.rand(2, features.dim) if model.spec.uses_metadata else None
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(*model.spec.model_inputs(images, feats))
        assert logits.dtype == torch.float32, name
