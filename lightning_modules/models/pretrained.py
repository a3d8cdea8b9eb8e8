"""Reading pretrained ResNet weights: a local state-dict file, or torchvision's cache.

Nothing is ever downloaded (the project machines cannot): a torchvision weights name that is not
in the cache is an error naming the file to copy there.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor

LOCAL_WEIGHTS_SUFFIXES = (".pth", ".pt")


def read_state_dict(weights: str | Path, architecture: str) -> tuple[dict[str, Tensor], str]:
    """Read a state dict from a local file or torchvision's cache, without downloading.

    Args:
        weights: A path ending in .pth/.pt (or any existing file), or a torchvision weights
            name for `architecture` ("IMAGENET1K_V1", "DEFAULT", "ResNet50_Weights.DEFAULT").
        architecture: Registered backbone name, used to look up torchvision's weights.

    Returns:
        The state dict and a description of where it came from, for error messages.
    """
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
