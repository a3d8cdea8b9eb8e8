"""Checkpoints written by earlier versions, read by this one: renamed settings and state keys.

Earlier versions named the trained domains `head_domains`, and set DANN with
`adaptation: dann`, `adaptation_weight` and `discriminator_hidden_features`, keeping the
discriminator at `discriminator.*`; it is now the training method `dann` (`method_kwargs`
`weight`, `hidden_features`) and its state is under `method.discriminator.*`. Resuming,
evaluating and growing from such a checkpoint go through these functions, so nothing already
written is lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Old state-dict prefix -> new.
RENAMED_STATE_PREFIXES = {"discriminator.": "method.discriminator."}
#: Old hyperparameter -> new (same value).
RENAMED_HPARAMS = {"head_domains": "trained_domains"}
#: Old DANN hyperparameter -> its option in `method_kwargs`.
DANN_OPTIONS = {"adaptation_weight": "weight", "discriminator_hidden_features": "hidden_features"}


def migrate_state_dict(state: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict with old keys renamed (`RENAMED_STATE_PREFIXES`)."""
    migrated = {}
    for key, value in state.items():
        for old, new in RENAMED_STATE_PREFIXES.items():
            if key.startswith(old):
                key = new + key.removeprefix(old)
                break
        migrated[key] = value
    return migrated


def migrate_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The model's saved hyperparameters with old settings translated to today's."""
    hparams = dict(hparams)
    for old, new in RENAMED_HPARAMS.items():
        if old in hparams:
            hparams[new] = hparams.pop(old)
    adaptation = hparams.pop("adaptation", None)
    dann_options = {new: hparams.pop(old) for old, new in DANN_OPTIONS.items() if old in hparams}
    if adaptation is not None:
        hparams["method"] = adaptation
        hparams["method_kwargs"] = dann_options
    return hparams


def migrate_checkpoint(checkpoint: dict) -> dict:
    """Migrate a loaded Lightning checkpoint in place (state dict and hyperparameters)."""
    if "state_dict" in checkpoint:
        checkpoint["state_dict"] = migrate_state_dict(checkpoint["state_dict"])
    if "hyper_parameters" in checkpoint:
        checkpoint["hyper_parameters"] = migrate_hparams(checkpoint["hyper_parameters"])
    return checkpoint
