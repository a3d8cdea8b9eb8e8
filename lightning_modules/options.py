"""Options of registered components (recalibration modules, training methods) read from their
constructors, so the valid keys of `recalibration_kwargs` and `method_kwargs` cannot drift from
the code: checking a config's options and naming a variant's non-default ones."""

from __future__ import annotations

import inspect
import json
from collections.abc import Collection, Mapping
from typing import Any

_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def constructor_options(component_class: type, positional: int = 0) -> dict[str, Any]:
    """The constructor's keyword options with their defaults, in signature order.

    Args:
        component_class: The class.
        positional: Leading arguments after `self` that are not options (a recalibration
            module's `channels`).

    Returns:
        `{option: default}`; an option without a default maps to `inspect.Parameter.empty`.
    """
    parameters = list(inspect.signature(component_class.__init__).parameters.values())
    return {p.name: p.default for p in parameters[1 + positional :] if p.kind in _KEYWORD_KINDS}


def check_options(
    component_class: type,
    options: Mapping[str, Any],
    label: str,
    setting: str,
    positional: int = 0,
) -> None:
    """Fail, naming the component and its valid options, on an option its constructor lacks.

    Values are checked by the constructor itself.

    Args:
        component_class: The component's class.
        options: The keyword arguments to be passed.
        label: What the component is, for the message ("Recalibration module 'srm'").
        setting: The config setting the options come from, for the message.
        positional: See `constructor_options`.

    Raises:
        ValueError: If an option is not a keyword argument of the constructor.
    """
    valid = constructor_options(component_class, positional)
    unknown = sorted(set(options) - set(valid))
    if not unknown:
        return
    listed = ", ".join(
        key if default is inspect.Parameter.empty else f"{key}={default!r}"
        for key, default in valid.items()
    )
    raise ValueError(
        f"{label} has no option {', '.join(map(repr, unknown))}; valid options: "
        f"{listed or 'none'}. They are set with {setting}."
    )


def format_options(
    component_class: type,
    options: Mapping[str, Any] | None,
    positional: int = 0,
    implementation_options: Collection[str] = (),
) -> str:
    """The options that change the component, as a stable `key=value,key=value` string.

    Options equal to their default, and `implementation_options` (which change how, not what,
    it computes), are left out: the defaults give '' and each variant one string.

    Args:
        component_class: The component's class (its options must already be checked).
        options: The given options (None: none).
        positional: See `constructor_options`.
        implementation_options: Options that never name a variant.

    Returns:
        The sorted pairs joined by commas; values in JSON (`false`, `[1,2]`), strings as they are.
    """
    defaults = constructor_options(component_class, positional)
    pairs = []
    for key, value in sorted(dict(options or {}).items()):
        if key in implementation_options or _same_value(value, defaults[key]):
            continue
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        pairs.append(f"{key}={text}")
    return ",".join(pairs)


def _same_value(value: Any, default: Any) -> bool:
    # A YAML list equals the default tuple it replaces (MS-SAR's scales); 1 equals 1.0.
    if isinstance(value, list | tuple) and isinstance(default, list | tuple):
        return list(value) == list(default)
    if isinstance(value, bool) or isinstance(default, bool):
        return value is default
    return value == default
