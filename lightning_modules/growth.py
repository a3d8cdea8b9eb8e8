"""Growing a trained model: start a new training from a checkpoint's backbone and heads, with
heads for domains the checkpoint has none for (`model.init_args.init_from_checkpoint`)."""

from __future__ import annotations

from pathlib import Path

import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import nn

from lightning_modules.checkpoint_migration import migrate_state_dict

#: State-dict prefixes copied from the parent checkpoint (the method's: a discriminator, say).
COPIED_PREFIXES = ("backbone.", "head.", "method.")


def grow_from_checkpoint(model: nn.Module, path: str, new_head_init: str) -> list[str]:
    """Copy the checkpoint's backbone, heads and method state into `model` unchanged; heads it
    lacks start as the mean of its heads (`new_head_init: mean`) or stay freshly initialised.

    Returns:
        The names of the heads the checkpoint lacked (the grown ones).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"model.init_from_checkpoint: {path} does not exist")
    # weights_only: a checkpoint from elsewhere cannot run code when loaded.
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = migrate_state_dict(checkpoint.get("state_dict", checkpoint))
    own = model.state_dict()
    missing = sorted(k for k in own if k.startswith("backbone.") and k not in state)
    if missing:
        raise ValueError(
            f"model.init_from_checkpoint: {path} lacks backbone weights {missing[:5]} "
            f"({len(missing)} in all); use the checkpoint's backbone and recalibration"
        )
    loaded = {}
    for key, value in state.items():
        if key.startswith(COPIED_PREFIXES) and key in own:
            if value.shape != own[key].shape:
                raise ValueError(
                    f"model.init_from_checkpoint: {key} has shape {tuple(value.shape)} in "
                    f"{path} but {tuple(own[key].shape)} here (different num_classes?)"
                )
            loaded[key] = value
    old_heads = sorted({key.split(".")[2] for key in state if key.startswith("head.heads.")})
    grown = [name for name in model.head.heads if name not in old_heads]
    if new_head_init == "mean" and old_heads:
        for name in grown:
            for parameter in ("weight", "bias"):
                stacked = torch.stack([state[f"head.heads.{o}.{parameter}"] for o in old_heads])
                loaded[f"head.heads.{name}.{parameter}"] = stacked.mean(dim=0)
    own.update(loaded)
    model.load_state_dict(own)
    rank_zero_info(
        f"Loaded backbone and heads {old_heads} from {path}; new heads {grown} ({new_head_init})"
    )
    return grown
