"""Reading pretrained ResNet and DenseNet weights: a local state-dict file, or torchvision's cache.

A torchvision weights name resolves to the file torchvision itself would cache, named after the
weights enum's `url` (e.g. `resnet18-f37072fd.pth`, `densenet121-a639ec97.pth`). Nothing is
ever downloaded (the project machines cannot): a torchvision weights name that is not in the
cache is an error naming the file to copy there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor

LOCAL_WEIGHTS_SUFFIXES = (".pth", ".pt")

# torchvision's DenseNet checkpoints predate the ban on "." in module names: their dense layers
# store `norm.1`, `relu.1`, `conv.1`, `norm.2`, `relu.2`, `conv.2` where the modules are now
# `norm1` ... `conv2`. torchvision renames them with this regex when it loads them
# (`torchvision.models.densenet._load_state_dict`, which has no public equivalent), so it is
# repeated here for the cached files and for local copies of them.
LEGACY_DENSE_LAYER_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def rename_legacy_densenet_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`...denselayer1.norm.1.weight` -> `...denselayer1.norm1.weight`; other keys unchanged."""
    renamed = {}
    for key, value in state_dict.items():
        match = LEGACY_DENSE_LAYER_KEY.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed


def read_state_dict(weights: str | Path, architecture: str) -> tuple[dict[str, Tensor], str]:
    """Read a state dict from a local file or torchvision's cache, without downloading.

    Args:
        weights: A path ending in .pth/.pt (or any existing file), or a torchvision weights
            name for `architecture` ("IMAGENET1K_V1", "DEFAULT", "ResNet50_Weights.DEFAULT").
        architecture: Registered backbone name, used to look up torchvision's weights.

    Returns:
        The state dict (DenseNet keys in today's names) and a description of where it came
        from, for error messages.
    """
    state_dict, source = _read_state_dict(weights, architecture)
    if architecture.startswith("densenet"):
        state_dict = rename_legacy_densenet_keys(state_dict)
    return state_dict, source


def _read_state_dict(weights: str | Path, architecture: str) -> tuple[dict[str, Tensor], str]:
    path = Path(weights).expanduser()
    if path.suffix in LOCAL_WEIGHTS_SUFFIXES or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"Weights file {path} does not exist (weights={weights!r}).")
        try:
            # Memory-mapped: the tensors are copied into the backbone anyway, so reading the
            # whole file first would only double the peak memory.
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            # Files saved before PyTorch 1.6 (legacy format) cannot be memory-mapped.
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        # Training checkpoints wrap the weights; accept the two common wrappers.
        for wrapper_key in ("state_dict", "model"):
            if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(wrapper_key), Mapping):
                checkpoint = checkpoint[wrapper_key]
                break
        return dict(checkpoint), str(path)
    return _read_torchvision_state_dict(str(weights), architecture)


def _read_torchvision_state_dict(
    weights_name: str, architecture: str
) -> tuple[dict[str, Tensor], str]:
    try:
        weights_enum = torchvision.models.get_model_weights(architecture)
    except ValueError:
        raise ValueError(
            f"torchvision has no pretrained weights for {architecture!r}, so "
            f"weights={weights_name!r} cannot be resolved; pass the path of a local .pth file."
        ) from None
    member_name = weights_name.removeprefix(f"{weights_enum.__name__}.")
    if member_name not in weights_enum.__members__:
        raise ValueError(
            f"weights={weights_name!r} is neither a local .pth/.pt file nor a torchvision weights "
            f"name for {architecture}; valid names: {', '.join(weights_enum.__members__)}."
        )
    weights = weights_enum[member_name]
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    cached_file = cache_dir / Path(urlparse(weights.url).path).name
    # No download is possible on the project machines, so fail before torchvision tries one.
    if not cached_file.is_file():
        raise FileNotFoundError(
            f"{weights_enum.__name__}.{weights.name} is not in torchvision's cache "
            f"({cached_file} not found; cache directory: torch.hub.get_dir() = "
            f"{torch.hub.get_dir()}) and cannot be downloaded here. Copy the file there, or pass "
            "its local path: create_backbone(..., weights='/path/to/resnet.pth')."
        )
    return weights.get_state_dict(progress=False), str(cached_file)
