"""A validated sweep (`SweepSpec`, read by `spec.load_spec`) and its expansion into trials:
the grid x cases x hyperparameter draws x trial seeds, each `Trial` with the hash of its resolved
config. The format and the pairing rules are in `spec.py`'s docstring."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.sweeps.distributions import sample
from experiments.sweeps.method_axis import DEFAULT_BASELINE_METHOD, MethodAxis, variant_label


class SweepSpecError(ValueError):
    """A sweep file that cannot run; the message names the file, the setting and the fix."""


@dataclass(frozen=True)
class Trial:
    """One fit (+ test): the base configs plus these overrides, under one trial seed."""

    index: int
    #: Dotted setting -> value, in command-line order: fixed, grid point, hyperparameter draw.
    overrides: dict[str, Any]
    seed: int
    draw: int
    #: The grid point alone (what the report groups by besides module and seed).
    grid_point: dict[str, Any]
    #: The draw's values alone ({} for the defaults).
    hparams: dict[str, Any]
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "overrides": self.overrides,
            "seed": self.seed,
            "draw": self.draw,
            "grid_point": self.grid_point,
            "hparams": self.hparams,
            "hash": self.hash,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        return cls(**data)


@dataclass
class SweepSpec:
    """A validated sweep file (see the module docstring for the format)."""

    path: Path
    name: str
    entry: str
    configs: list[Path]
    experiment: str
    tracking_uri: str | None
    output_dir: Path
    fixed: dict[str, Any]
    grid: dict[str, list[Any]]
    #: Axis name -> {case label: the settings it sets} (see the module docstring).
    cases: dict[str, dict[str, dict[str, Any]]]
    seeds: list[int]
    #: Settings the trial seed goes to (the global seed; also the data split for DomainBed).
    seed_keys: list[str]
    n_draws: int
    hparam_seed: int
    space: dict[str, dict[str, list[Any]]]
    include_defaults: bool
    module_key: str
    baseline: str
    held_out_key: str
    #: The training methods as an axis (`method_axis.py`); no methods: the base configs decide.
    method_axis: MethodAxis
    resources: dict[str, float]
    max_concurrent_trials: int | None
    #: The method the others are paired with (with `baseline`: `none` + `erm`).
    baseline_method: str = DEFAULT_BASELINE_METHOD
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    def draws(self) -> list[dict[str, Any]]:
        """The hyperparameter draws, the same for every grid point and seed ([{}] without a
        search: the base config's values)."""
        if self.n_draws == 0:
            return [{}]
        draws = []
        for index in range(self.n_draws):
            if index == 0 and self.include_defaults:
                draws.append({})
                continue
            # One generator per draw, seeded by (search seed, draw index) only: the same values
            # for every module, held-out domain and trial seed, whatever the order of the grid.
            rng = random.Random(f"{self.hparam_seed}:{index}")
            draws.append({key: sample(dist, rng) for key, dist in sorted(self.space.items())})
        return draws

    def trials(self) -> list[Trial]:
        """Grid x cases x draws x seeds, in a fixed order; each with the hash of its resolved
        config.

        A draw that repeats an earlier one of the same grid point (ERM, which has no options
        of its own, with `method_space` and nothing else drawn; two equal `choice` draws) is
        left out: it would be the same fit, and its hash the same trial."""
        axes = {**self.grid, **{axis: list(cases) for axis, cases in self.cases.items()}}
        points = [dict(zip(axes, values, strict=True)) for values in _product(axes)]
        config_digest = self.config_digest()
        trials: list[Trial] = []
        seen: set[str] = set()
        for point, (draw_index, draw), seed in itertools.product(
            points, enumerate(self.draws()), self.seeds
        ):
            settings = {key: point[key] for key in self.grid}
            for axis, cases in self.cases.items():
                settings.update(cases[point[axis]])
            # The method's options of this draw: a function of (search seed, draw, method) only,
            # so every module (and held-out set, and seed) gets the same ones.
            method = settings.get(self.method_axis.key, self.fixed.get(self.method_axis.key))
            if method is not None:
                options = self.method_axis.overrides(str(method), draw_index)
                draw = {**draw, **{k: v for k, v in options.items() if v}}
            else:
                options = {}
            seeds = dict.fromkeys(self.seed_keys, seed)
            overrides = {**self.fixed, **settings, **draw, **options, **seeds}
            resolved = {"entry": self.entry, "configs": config_digest, "overrides": overrides}
            digest = hashlib.sha256(canonical_json(resolved).encode()).hexdigest()[:16]
            if digest in seen:
                continue
            seen.add(digest)
            trials.append(Trial(len(trials), overrides, seed, draw_index, point, draw, digest))
        return trials

    def config_digest(self) -> list[list[str]]:
        """[path, sha256 of its text] per base config: editing a base config makes new trials."""
        return [[str(path), hashlib.sha256(path.read_bytes()).hexdigest()] for path in self.configs]

    def case_labels(self, trial: Trial) -> list[str]:
        """The trial's case label on each `cases` axis, in axis order."""
        return [str(trial.grid_point[axis]) for axis in self.cases]

    def module_of(self, trial: Trial) -> str:
        return str(trial.overrides.get(self.module_key, "?"))

    def method_of(self, trial: Trial) -> str:
        """The trial's training method ('' where the sweep leaves it to the base configs)."""
        return str(trial.overrides.get(self.method_axis.key, ""))

    def variant_of(self, trial: Trial) -> str:
        """What the report's rows are: `srm`, or `srm+coral` in a sweep with methods."""
        return variant_label(self.module_of(trial), self.method_of(trial))

    def modules(self) -> list[str]:
        return [str(m) for m in self.grid.get(self.module_key, [self.fixed.get(self.module_key)])]

    def methods(self) -> list[str]:
        """The sweep's methods in grid order ([''] without a method axis)."""
        return self.method_axis.methods or [""]

    def variants(self) -> list[str]:
        """Every module x method label, methods outer (the report's row order)."""
        return [variant_label(m, method) for method in self.methods() for m in self.modules()]

    @property
    def baseline_variant(self) -> str:
        """`none` (with ERM): the row every other one is paired with."""
        method = self.baseline_method if self.method_axis.methods else ""
        return variant_label(self.baseline, method)

    def held_out_of(self, trial: Trial) -> list[str]:
        """The trial's held-out domains ([] for the multi-domain protocol)."""
        value = trial.overrides.get(self.held_out_key) or []
        return [str(v) for v in (value if isinstance(value, list) else [value])]


def _product(grid: dict[str, list[Any]]):
    return itertools.product(*grid.values()) if grid else [()]


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
