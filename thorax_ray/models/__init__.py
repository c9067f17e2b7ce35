"""Models: one registry (`create_model`, `list_models`, `register_model`), image CNNs, the metadata
MLP and the image + metadata fusion model. See `thorax_ray.models.registry` for the calling
convention (`ModelSpec`, `forward_model`)."""
from thorax_ray.models.cnn import IMAGE_CNNS, ImageCNN, build_cnn, receptive_field_centres
from thorax_ray.models.features import AVAILABLE_FEATURES, DEFAULT_FEATURES, FOLLOW_UP_FEATURES, MetadataFeatures
from thorax_ray.models.fusion import FusionModel
from thorax_ray.models.mlp import MetadataMLP
from thorax_ray.models.pretrained import (IMAGENET, PretrainedWeightsError, adapt_input_conv,
                                          load_backbone_state_dict, model_initialisation, read_state_dict)
from thorax_ray.models.registry import (DEFAULT_MODEL, INPUT_KINDS, ModelSpec, build_model, create_model,
                                        create_model_from_config, forward_model, get_model_spec, list_models,
                                        register_model)

__all__ = [
    "AVAILABLE_FEATURES",
    "DEFAULT_FEATURES",
    "DEFAULT_MODEL",
    "FOLLOW_UP_FEATURES",
    "FusionModel",
    "IMAGE_CNNS",
    "IMAGENET",
    "INPUT_KINDS",
    "ImageCNN",
    "MetadataFeatures",
    "MetadataMLP",
    "ModelSpec",
    "PretrainedWeightsError",
    "adapt_input_conv",
    "build_cnn",
    "build_model",
    "create_model",
    "create_model_from_config",
    "forward_model",
    "get_model_spec",
    "list_models",
    "load_backbone_state_dict",
    "model_initialisation",
    "read_state_dict",
    "receptive_field_centres",
    "register_model",
]
