"""Models: one registry (`create_model`, `list_models`; each implementation registers itself with
`registry.register_model` when its module is imported), image CNNs, the metadata MLP and the image +
metadata fusion model. See `thorax_ray.models.registry` for the calling convention (`ModelSpec`,
`forward_model`)."""
from thorax_ray.models import fusion, mlp  # noqa: F401 (imported for what they register)
from thorax_ray.models.cnn import receptive_field_centres
from thorax_ray.models.features import AVAILABLE_FEATURES, DEFAULT_FEATURES, MetadataFeatures
from thorax_ray.models.pretrained import model_initialisation, require_pretrained_weights
from thorax_ray.models.registry import build_model, create_model, get_model_spec, list_models

__all__ = [
    "AVAILABLE_FEATURES",
    "DEFAULT_FEATURES",
    "MetadataFeatures",
    "build_model",
    "create_model",
    "get_model_spec",
    "list_models",
    "model_initialisation",
    "receptive_field_centres",
    "require_pretrained_weights",
]
