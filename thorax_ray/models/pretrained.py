"""Initialising CNNs from ImageNet-style weights, and recording how a model was initialised.

Torchvision architectures are always built with `weights=None`; ImageNet-style weights are loaded
after (`pretrained=`): "imagenet" takes torchvision's own ImageNet weights for the architecture
(`<Arch>_Weights.IMAGENET1K_V1`, read from the torch hub cache `$TORCH_HOME/hub/checkpoints/`, which
torchvision fills by downloading them on first use), any other value is a local path or URI of a
state_dict. The 3-channel stem is summed over its input channels (timm's `adapt_input_conv`), the old
classifier is dropped, the rest must match exactly. Every model built here records how it was
initialised in `model.init` (`initialisation`).
"""
from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from thorax_ray import storage
from thorax_ray.models.registry import DEFAULT_MODEL, RANDOM_INIT, get_model_spec
from thorax_ray.preflight import require_inputs


class PretrainedWeightsError(ValueError):
    """A pretrained state_dict that cannot be read or does not fit the architecture."""


def adapt_input_conv(in_chans: int, conv_weight: torch.Tensor) -> torch.Tensor:
    """timm's `adapt_input_conv`: a conv weight (O, I, kh, kw) for `in_chans` input channels.

    in_chans == 1: sum over the input channels (RGB -> grey keeps the response to a grey image).
    Other counts: repeat the RGB weights and rescale by 3 / in_chans.
    """
    dtype = conv_weight.dtype
    weight = conv_weight.float()
    out_c, in_c, kh, kw = weight.shape
    if in_chans == in_c:
        return conv_weight
    if in_chans == 1:
        if in_c > 3:
            if in_c % 3:
                raise ValueError(f"cannot adapt a {in_c}-channel conv weight to 1 channel")
            weight = weight.reshape(out_c, in_c // 3, 3, kh, kw).sum(dim=2)
        else:
            weight = weight.sum(dim=1, keepdim=True)
    else:
        if in_c != 3:
            raise ValueError(f"cannot adapt a {in_c}-channel conv weight to {in_chans} channels")
        repeat = -(-in_chans // 3)
        weight = weight.repeat(1, repeat, 1, 1)[:, :in_chans] * (3.0 / in_chans)
    return weight.to(dtype)


_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def read_state_dict(uri: str) -> dict[str, torch.Tensor]:
    """Reads a state_dict from a local path or URI with `torch.load(weights_only=True)`.

    Accepts a bare state_dict or a dict holding one under "state_dict" / "model"; strips a
    leading "module." (DataParallel) from keys.
    """
    fs, path = storage.filesystem(str(uri))
    try:
        with fs.open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"pretrained weights not found: {uri}") from exc
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling / zip errors: name the file, keep the cause
        raise PretrainedWeightsError(
            f"cannot read pretrained weights {uri}: not a torch state_dict loadable with "
            f"weights_only=True ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedWeightsError(f"pretrained weights {uri} are not a state_dict of tensors")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_backbone_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, stem_key: str,
                             classifier_key: str, source: str = "state_dict") -> None:
    """Loads an (ImageNet-style) state_dict into `module` (torchvision naming).

    The stem weight `<stem_key>.weight` is adapted to the module's input channels by summing,
    keys of the old classifier `<classifier_key>.*` are dropped (the module's new head keeps its
    initialisation), and every other key must match in name and shape: otherwise a
    `PretrainedWeightsError` lists the missing, unexpected and mismatched keys.
    """
    state = {}
    for key, value in state_dict.items():
        match = _DENSENET_LEGACY.match(key)
        state[match.group(1) + match.group(2) if match else key] = value
    head = classifier_key + "."
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    stem_weight = stem_key + ".weight"
    target = module.state_dict()
    if stem_weight in state and stem_weight in target:
        wanted = target[stem_weight].shape[1]
        if state[stem_weight].ndim == 4 and state[stem_weight].shape[1] != wanted:
            state[stem_weight] = adapt_input_conv(wanted, state[stem_weight])
    expected = {k for k in target if not k.startswith(head)}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    mismatched = sorted(
        f"{k}: {tuple(state[k].shape)} vs {tuple(target[k].shape)}"
        for k in expected & set(state) if state[k].shape != target[k].shape
    )
    if missing or unexpected or mismatched:
        def show(items: list[str]) -> str:
            return ", ".join(items[:20]) + (f", ... ({len(items)} in all)" if len(items) > 20 else "")
        raise PretrainedWeightsError(
            f"pretrained weights {source} do not fit the architecture: "
            f"missing keys [{show(missing)}]; unexpected keys [{show(unexpected)}]; "
            f"shape mismatches [{show(mismatched)}]"
        )
    result = module.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= set(target) - expected


IMAGENET = "imagenet"  # `pretrained=` value meaning torchvision's ImageNet weights of the architecture
IMAGENET_ARCHS = ("densenet121", "efficientnet_b0", "resnet18", "resnet50")  # torchvision's, built in cnn.py


def imagenet_weights(arch: str):
    """torchvision's ImageNet weights enum member of a torchvision architecture (no download)."""
    if arch not in IMAGENET_ARCHS:
        raise ValueError(f"no ImageNet weights for {arch!r}: torchvision publishes them for "
                         f"{', '.join(IMAGENET_ARCHS)}; pass --pretrained PATH for other weights")
    import torchvision  # deferred: torchvision (slow import)

    return torchvision.models.get_model_weights(arch).IMAGENET1K_V1


def imagenet_cache_path(arch: str) -> str:
    """Where torchvision keeps (and looks for) the ImageNet weights file of `arch`."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(imagenet_weights(arch).url))


def read_imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet state_dict of `arch` through its weights API (`get_state_dict`, i.e.
    `torch.hub.load_state_dict_from_url` with weights_only=True): read from the torch hub cache, downloaded
    there first when absent (needs internet once per machine; offline, copy the file to the cache)."""
    weights = imagenet_weights(arch)
    try:
        return weights.get_state_dict(progress=False, weights_only=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a torn file fails to unzip
        raise PretrainedWeightsError(
            f"cannot load torchvision's ImageNet weights {weights} for {arch}: {type(exc).__name__}: {exc}. "
            f"They are read from {imagenet_cache_path(arch)} (downloaded from {weights.url} when absent): on a "
            "machine without internet, copy that file there (or set TORCH_HOME), or pass --pretrained PATH"
        ) from exc


def require_pretrained_weights(name: str, pretrained: str | None, backbone: str = DEFAULT_MODEL, *,
                               endpoint_url: str | None = None) -> None:
    """Before anything slow starts: the weights `create_model(name, pretrained=..., backbone=...)` will read
    exist. "imagenet": torchvision's file for the CNN (for fusion, its backbone) in the torch hub cache, else
    FileNotFoundError naming that exact path and the URL (ValueError for an architecture torchvision publishes
    no ImageNet weights for); a path or URI: that it exists. Run where the job starts, which is where training
    reads them (`read_model_weights`) before handing them to its workers."""
    if pretrained is None:
        return
    if str(pretrained).lower() != IMAGENET:
        require_inputs({"--pretrained": pretrained}, endpoint_url=endpoint_url)
        return
    arch = backbone if get_model_spec(name).input_kind == "both" else name
    path = imagenet_cache_path(arch)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--pretrained imagenet: torchvision's ImageNet weights for {arch} are not in the torch hub cache: "
            f"{path} is missing; download {imagenet_weights(arch).url} to that path (or set TORCH_HOME to a folder "
            "whose hub/checkpoints/ holds it)")


def initialisation(arch: str, pretrained: PretrainedArg) -> dict[str, str]:
    """How a CNN of `arch` built with `pretrained` starts: {"kind": "imagenet" | "weights_file" | "random",
    "source": what was loaded, "label": a short phrase for column labels}."""
    pretrained = pretrained_name(pretrained)
    if pretrained is None:
        return {"kind": "random", "source": "", "label": "random init"}
    if str(pretrained).lower() == IMAGENET:
        name = f"torchvision {imagenet_weights(arch)}"
        return {"kind": "imagenet", "source": name, "label": "ImageNet init"}
    return {"kind": "weights_file", "source": str(pretrained),
            "label": f"init from {str(pretrained).rstrip('/').rsplit('/', 1)[-1]}"}


def model_initialisation(name: str, pretrained: str | None = None, backbone: str = DEFAULT_MODEL) -> dict:
    """`model.build_config["init"]` of `create_model(name, pretrained=..., backbone=...)`, without building
    it (no weights read): the CNN's (for fusion, its backbone's) initialisation; random for the MLP."""
    spec = get_model_spec(name)
    if not spec.uses_images:
        return dict(RANDOM_INIT)
    if spec.input_kind == "both":
        init = initialisation(backbone, pretrained)
        return {**init, "label": f"{backbone} {init['label']}"}
    return initialisation(name, pretrained)


@dataclass(frozen=True)
class LoadedWeights:
    """Pretrained weights already read, with the `pretrained` value they were read for ("imagenet" or a path):
    accepted by `create_model(pretrained=...)` in place of that value. The training job reads them once, on
    its driver (where `require_pretrained_weights` checked them), and hands them to every worker through
    Ray's object store, so no worker reads a cache or file of its own node."""

    source: str
    state: dict[str, torch.Tensor]


PretrainedArg = str | LoadedWeights | None  # what `create_model(pretrained=...)` takes


def pretrained_name(pretrained: PretrainedArg) -> str | None:
    """The `pretrained` value ("imagenet", a path or None), also for weights already read."""
    return pretrained.source if isinstance(pretrained, LoadedWeights) else pretrained


def read_pretrained(arch: str, pretrained: PretrainedArg) -> LoadedWeights:
    """The state_dict `pretrained` names for a CNN of `arch`: torchvision's ImageNet weights, a file, or weights
    read before (returned as they are)."""
    if isinstance(pretrained, LoadedWeights):
        return pretrained
    if str(pretrained).lower() == IMAGENET:
        return LoadedWeights(str(pretrained), read_imagenet_state_dict(arch))
    return LoadedWeights(str(pretrained), read_state_dict(pretrained))


def read_model_weights(name: str, pretrained: str | None, backbone: str = DEFAULT_MODEL) -> LoadedWeights | None:
    """The weights `create_model(name, pretrained=..., backbone=...)` would read, read now (None: none)."""
    spec = get_model_spec(name)
    if pretrained is None or not spec.uses_images:
        return None
    return read_pretrained(backbone if spec.input_kind == "both" else name, pretrained)


def load_pretrained(module: nn.Module, arch: str, pretrained: PretrainedArg, *, stem_key: str,
                    classifier_key: str) -> None:
    """Loads `pretrained` ("imagenet", a path/URI or LoadedWeights) into `module` with `load_backbone_state_dict`."""
    weights = read_pretrained(arch, pretrained)
    source = (f"torchvision {imagenet_weights(arch)}" if weights.source.lower() == IMAGENET else weights.source)
    load_backbone_state_dict(module, weights.state, stem_key=stem_key, classifier_key=classifier_key, source=source)


# ----- the common interface --------------------------------------------------------------------------
