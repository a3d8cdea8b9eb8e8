"""The random search's named distributions: checked when a sweep file is read, sampled per draw.

One vocabulary serves the sweep files' `hparams.space` and the training methods' own
`search_space` (`lightning_modules/methods/base.py`), so a method's DomainBed distribution is
written once, with the method, and drawn by the sweep exactly as a distribution in a sweep file.
"""

from __future__ import annotations

import math
import random
from typing import Any

#: Named distributions of the random search and the arguments each takes.
DISTRIBUTIONS = {
    "log_uniform": "[low, high], both > 0: exp(uniform(log low, log high))",
    "uniform": "[low, high]",
    "int_uniform": "[low, high], integers, both included",
    "int_log_uniform": "[low, high], both > 0: int(exp(uniform(log low, log high)))",
    "choice": "[value, ...], one picked uniformly",
}


def sample(distribution: dict[str, list[Any]], rng: random.Random) -> Any:
    """One value of a validated distribution `{name: arguments}`."""
    ((name, arguments),) = distribution.items()
    if name == "choice":
        return rng.choice(arguments)
    low, high = arguments
    if name == "log_uniform":
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    if name == "uniform":
        return float(rng.uniform(low, high))
    if name == "int_log_uniform":
        return int(math.exp(rng.uniform(math.log(low), math.log(high))))
    return int(rng.randint(int(low), int(high)))  # int_uniform


def check_distribution(distribution: Any, where: str, fail) -> None:
    """Raise `fail(where, problem)` unless `distribution` is one named distribution with valid
    arguments."""
    if not isinstance(distribution, dict) or len(distribution) != 1:
        raise fail(
            where,
            f"one named distribution, e.g. {{log_uniform: [1.0e-4, 1.0e-2]}}; "
            f"names: {', '.join(DISTRIBUTIONS)}",
        )
    ((name, arguments),) = distribution.items()
    if name not in DISTRIBUTIONS:
        raise fail(where, f"unknown distribution {name!r}; one of: {', '.join(DISTRIBUTIONS)}")
    if not isinstance(arguments, list) or not arguments:
        raise fail(where, f"{name} takes {DISTRIBUTIONS[name]}")
    if name == "choice":
        return
    if len(arguments) != 2 or not all(
        isinstance(a, int | float) and not isinstance(a, bool) for a in arguments
    ):
        raise fail(where, f"{name} takes {DISTRIBUTIONS[name]}, got {arguments!r}")
    low, high = arguments
    if not low < high:
        raise fail(where, f"{name}: low must be below high, got {arguments!r}")
    if name in ("log_uniform", "int_log_uniform") and low <= 0:
        raise fail(where, f"{name} needs low > 0, got {arguments!r}")
    if name == "int_uniform" and not all(float(a).is_integer() for a in arguments):
        raise fail(where, f"int_uniform takes integer bounds, got {arguments!r}")
