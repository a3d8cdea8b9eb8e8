"""Checkpoints written by earlier versions, read by this one: renamed settings and state keys.

Earlier versions named the trained domains `head_domains`, and set DANN with
`adaptation: dann`, `adaptation_weight` and `discriminator_hidden_features`, keeping the
discriminator at `discriminator.*`; it is now the training method `dann` (`method_kwargs`
`weight`, `hidden_features`) and its state is under `method.discriminator.*`. Gather-Excite's
gather convolutions had a bias (the SRM authors' definition); the default is now the GE
authors' (no bias), so a checkpoint with gather biases is read as `definition: srm`. Resuming,
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


#: State-dict key endings of a Gather-Excite gather convolution's bias.
GATHER_BIAS_SUFFIXES = (".gather.conv.bias", ".gather.conv1.bias")


def has_gather_bias(state: Mapping[str, Any]) -> bool:
    """Whether the state dict holds Gather-Excite gather biases (the SRM authors' GE)."""
    return any(key.endswith(GATHER_BIAS_SUFFIXES) for key in state)


def gather_definition_error(hparams: Mapping[str, Any], state: Mapping[str, Any]) -> str | None:
    """A message when the checkpoint's Gather-Excite and the model's differ in their gather
    biases (`definition`), naming the setting that makes them match; None when they match."""
    if hparams.get("recalibration") not in ("ge", "ge_plus"):
        return None
    definition = (hparams.get("recalibration_kwargs") or {}).get("definition", "ge")
    if has_gather_bias(state) == (definition == "srm"):
        return None
    wanted = "srm" if has_gather_bias(state) else "ge"
    return (
        f"the checkpoint's Gather-Excite uses definition {wanted!r} (gather convolutions "
        f"{'with' if wanted == 'srm' else 'without'} a bias) but the model is built with "
        f"{definition!r}; set model.init_args.recalibration_kwargs: {{definition: {wanted}}}"
    )


def migrate_hparams(
    hparams: Mapping[str, Any], state: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The model's saved hyperparameters with old settings translated to today's (the state
    dict, when given, tells which Gather-Excite definition the checkpoint was trained with)."""
    hparams = dict(hparams)
    for old, new in RENAMED_HPARAMS.items():
        if old in hparams:
            hparams[new] = hparams.pop(old)
    adaptation = hparams.pop("adaptation", None)
    dann_options = {new: hparams.pop(old) for old, new in DANN_OPTIONS.items() if old in hparams}
    if adaptation is not None:
        hparams["method"] = adaptation
        hparams["method_kwargs"] = dann_options
    if state is not None and gather_definition_error(hparams, state):
        kwargs = dict(hparams.get("recalibration_kwargs") or {})
        hparams["recalibration_kwargs"] = {**kwargs, "definition": "srm"}
    return hparams


def migrate_checkpoint(checkpoint: dict) -> dict:
    """Migrate a loaded Lightning checkpoint in place (state dict and hyperparameters)."""
    if "state_dict" in checkpoint:
        checkpoint["state_dict"] = migrate_state_dict(checkpoint["state_dict"])
    if "hyper_parameters" in checkpoint:
        checkpoint["hyper_parameters"] = migrate_hparams(
            checkpoint["hyper_parameters"], checkpoint.get("state_dict")
        )
    return checkpoint
