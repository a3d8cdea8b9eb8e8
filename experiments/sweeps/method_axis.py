"""The training method as a sweep axis: names checked against the registry, each method's options
drawn from its own search space, and the `<module>+<method>` labels the report groups by.

    grid:
      model.init_args.recalibration: [none, srm]
      model.init_args.method: [erm, coral, mixstyle]
    hparams:
      n_draws: 20
      seed: 0
      include_defaults: true     # draw 0: every method's constructor defaults
      method_space: true         # draw each method's options from its own `search_space`
      space:                     # the shared hyperparameters, as before
        model.init_args.optimizer.init_args.lr: {log_uniform: [1.0e-5, 3.1623e-4]}
    method_kwargs:               # optional: options fixed per method (never drawn)
      mixstyle: {mix: crossdomain}

A trial of method m and draw i gets `model.init_args.method_kwargs` = m's fixed options plus,
with `method_space`, one value per other option of `m.search_space`, each from a generator
seeded by (search seed, i, m, option) alone. Nothing of the recalibration module, the held-out
domains or the trial seed enters, so draw i gives `none+coral` and `srm+coral` the same options
(and the same shared hyperparameters, which depend on (search seed, i) only): every module is
compared with the same draws, i.e. the comparison stays paired. This is DomainBed's protocol
(each algorithm's random hyperparameters from its own distributions, `hparams_registry.py`),
except that DomainBed also seeds the draw with the trial seed; here a draw is shared by the
trial seeds too, so each seed repeats the same 20 configurations (see `spec.py`).
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.sweeps.distributions import check_distribution, sample
from lightning_modules.methods import TRAINING_METHODS, check_method_options, method_class

DEFAULT_METHOD_KEY = "model.init_args.method"
#: The CLI setting the method's options go to (a mapping, `--model.init_args.method_kwargs`).
METHOD_KWARGS_KEY = "model.init_args.method_kwargs"
DEFAULT_BASELINE_METHOD = "erm"
#: The method a label leaves out: `srm` is `srm` with ERM (as `variant_name()` names runs).
PLAIN_METHOD = "erm"


def variant_label(module: str, method: str) -> str:
    """`srm` (ERM, or a sweep without a method axis), `srm+coral`: as run names show it."""
    return module if method in ("", PLAIN_METHOD) else f"{module}+{method}"


@dataclass(frozen=True)
class MethodAxis:
    """The sweep's training methods: the values of `key` in the grid (or fixed), the options
    fixed per method, and whether each draw also draws every method's options."""

    key: str = DEFAULT_METHOD_KEY
    #: The methods the sweep sets, in grid order ([]: the base configs decide, no axis).
    methods: list[str] = field(default_factory=list)
    in_grid: bool = False
    #: hparams.method_space: each draw draws each method's options from its `search_space`.
    draw_options: bool = False
    #: method -> options every trial of it gets (`method_kwargs` of the sweep file).
    fixed_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    search_seed: int = 0
    include_defaults: bool = False

    @property
    def sets_options(self) -> bool:
        """Whether trials get `method_kwargs` from the axis (always, once the method varies:
        a base config's options would be one method's, wrong for the others)."""
        return self.in_grid or self.draw_options or bool(self.fixed_options)

    def options(self, method: str, draw: int) -> dict[str, Any]:
        """Method `method`'s options in draw `draw`: its fixed options, plus (with
        `method_space`, except for the defaults draw) a value of each other option of its
        search space, each seeded by (search seed, draw, method, option) only."""
        fixed = dict(self.fixed_options.get(method, {}))
        if not self.draw_options or (draw == 0 and self.include_defaults):
            return fixed
        space = method_class(method).search_space
        drawn = {
            name: sample(distribution, random.Random(f"{self.search_seed}:{draw}:{method}:{name}"))
            for name, distribution in sorted(space.items())
            if name not in fixed
        }
        return dict(sorted({**fixed, **drawn}.items()))

    def overrides(self, method: str, draw: int) -> dict[str, Any]:
        """What a trial of `method` and draw `draw` adds to its command line."""
        return {METHOD_KWARGS_KEY: self.options(method, draw)} if self.sets_options else {}


def read_method_axis(
    raw: dict[str, Any],
    hparams: dict[str, Any],
    grid: dict[str, list[Any]],
    fixed: dict[str, Any],
    space: dict[str, Any],
    fail: Callable[[str, str], Exception],
) -> MethodAxis:
    """The validated method axis of a sweep file (`raw`; `hparams`, `grid`, `fixed`, `space`
    already read); raises `fail(setting, problem)` naming the fix."""
    key = raw.get("method_key", DEFAULT_METHOD_KEY)
    if not isinstance(key, str) or not key:
        raise fail("method_key", f"a dotted setting name, got {key!r}")
    draw_options = hparams.get("method_space", False)
    if not isinstance(draw_options, bool):
        raise fail("hparams.method_space", f"true or false, got {draw_options!r}")
    fixed_options = raw.get("method_kwargs") or {}
    if key in grid:
        where, methods = f"grid.{key}", [str(m) for m in grid[key]]
    elif key in fixed:
        where, methods = f"fixed.{key}", [str(fixed[key])]
    else:
        where, methods = "", []
    if key in space:
        raise fail(
            f"hparams.space.{key}",
            "the method is an axis, not a draw: list the methods under grid",
        )
    if not methods:
        for setting, given in (
            ("hparams.method_space", draw_options),
            ("method_kwargs", fixed_options),
            ("baseline_method", "baseline_method" in raw),
        ):
            if given:
                raise fail(
                    setting,
                    f"needs the methods in grid or fixed (e.g. `grid: {{{key}: [erm, coral]}}`)",
                )
        return MethodAxis(key=key)
    for method in methods:
        if method not in TRAINING_METHODS:
            raise fail(
                where,
                f"unknown training method {method!r}; valid: {', '.join(TRAINING_METHODS)} "
                "(registered in lightning_modules/methods/__init__.py)",
            )
    if len(set(methods)) != len(methods):
        raise fail(where, f"a method is listed twice in {methods}")
    if not isinstance(fixed_options, dict):
        raise fail("method_kwargs", f"a mapping method -> {{option: value}}, got {fixed_options!r}")
    for method, options in fixed_options.items():
        if method not in methods:
            raise fail(f"method_kwargs.{method}", f"not among the sweep's methods {methods}")
        if not isinstance(options, dict):
            raise fail(f"method_kwargs.{method}", f"a mapping option -> value, got {options!r}")
        try:
            check_method_options(method, options)
        except ValueError as error:
            raise fail(f"method_kwargs.{method}", str(error)) from None
    axis = MethodAxis(
        key=key,
        methods=methods,
        in_grid=key in grid,
        draw_options=draw_options,
        fixed_options={method: dict(options) for method, options in fixed_options.items()},
        search_seed=int(hparams.get("seed", 0)),
        include_defaults=bool(hparams.get("include_defaults", False)),
    )
    if axis.sets_options:
        for setting, values in (("fixed", fixed), ("grid", grid), ("hparams.space", space)):
            if METHOD_KWARGS_KEY in values:
                raise fail(
                    f"{setting}.{METHOD_KWARGS_KEY}",
                    "set by the method axis for each method; put options of one method under "
                    "`method_kwargs: {<method>: {<option>: <value>}}`",
                )
    if draw_options:
        if not hparams.get("n_draws"):
            raise fail("hparams.method_space", "draws nothing without hparams.n_draws >= 1")
        for method in methods:
            for option, distribution in method_class(method).search_space.items():
                check_distribution(
                    distribution,
                    f"hparams.method_space: {method}'s search_space.{option} "
                    f"({method_file(method)})",
                    fail,
                )
    return axis


def method_file(method: str) -> str:
    """The file that defines the method, relative to the project (for error messages)."""
    path = Path(inspect.getfile(method_class(method))).resolve()
    return str(path.relative_to(Path(__file__).resolve().parents[2]))


def searched_options(axis: MethodAxis) -> bool:
    """Whether any method of the axis has an option left to draw."""
    return axis.draw_options and any(
        set(method_class(m).search_space) - set(axis.fixed_options.get(m, {})) for m in axis.methods
    )
