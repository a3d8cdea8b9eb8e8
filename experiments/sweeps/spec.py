"""The sweep file: what to run (YAML, validated), expanded into trials with stable hashes.

A sweep is the product grid x trial seeds x hyperparameter draws over one or more base configs
of an ordinary `python -m experiments.<entry> fit`. Keys are the CLI's dotted setting names
(`model.init_args.recalibration`), so a trial is exactly a command line a person could type.

    name: demo
    entry: officehome                       # python -m experiments.officehome
    configs: [configs/officehome/demo.yaml] # stacked like repeated --config
    fixed: {trainer.max_epochs: 12}         # the same for every trial
    grid:                                   # every combination
      model.init_args.recalibration: [none, se, srm, ge]
      model.init_args.method: [erm, coral]  # optional: the training methods (method_axis.py)
    cases:                                  # more axes, each value settings set together
      pair:
        Ar2Cl: {data.init_args.domains: [Art, Clipart], data.init_args.target_domains: [Clipart]}
        Cl2Ar: {data.init_args.domains: [Clipart, Art], data.init_args.target_domains: [Art]}
    seeds: 3                                # trial seeds 0, 1, 2 (or a list)
    seed_key: [seed_everything, data.init_args.split_seed]   # where the seed goes
    hparams:                                # optional random search
      n_draws: 4
      seed: 0
      space:
        model.init_args.optimizer.init_args.lr: {log_uniform: [1.0e-4, 1.0e-2]}
        data.init_args.batch_size: {choice: [16, 32, 64]}
      method_space: true                    # also each method's options, from its search_space
    method_kwargs: {coral: {mmd_gamma: 1.0}}  # optional: options fixed per method
    baseline: none                          # the row every other one is paired with ...
    baseline_method: erm                    # ... with this method (default erm)

A `cases` axis is crossed with the grid like a grid key, but each of its values is a labelled
set of settings applied together (a source -> target pair sets two; a method can bring its own
learning rate); a setting a case leaves out keeps the base config's value. The trial's grid point
holds the axis name with the case's label (`pair: Ar2Cl`), its overrides the settings.

Hyperparameter draw `i` is drawn from its own generator seeded by `(hparams.seed, i)`, never
from the grid point or the trial seed, so every module (and held-out domain, and trial seed)
gets the same draws and the comparison between modules is paired. Draw 0 is the base config's
own values when `include_defaults` is true (DomainBed's first draw is its default hparams).
A method's options in draw `i` are drawn the same way, from generators seeded by the search seed,
`i`, the method and the option (see `method_axis.py`): `none+coral` and `srm+coral` get the same.
The report's rows are `<module>` or `<module>+<method>`, each paired with `baseline` +
`baseline_method` over the same trial seeds and held-out sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from experiments.sweeps.distributions import check_distribution
from experiments.sweeps.expansion import SweepSpec, SweepSpecError, Trial
from experiments.sweeps.method_axis import (
    DEFAULT_BASELINE_METHOD,
    read_method_axis,
    searched_options,
)

# `Trial` is imported here for the modules that read a sweep and its trials from one place.
__all__ = ["SweepSpec", "SweepSpecError", "Trial", "load_spec"]

#: Top-level keys of a sweep file.
SPEC_KEYS = {
    "name",
    "description",
    "entry",
    "configs",
    "experiment",
    "tracking_uri",
    "output_dir",
    "fixed",
    "grid",
    "cases",
    "seeds",
    "seed_key",
    "hparams",
    "module_key",
    "method_key",
    "method_kwargs",
    "baseline",
    "baseline_method",
    "held_out_key",
    "resources",
    "max_concurrent_trials",
}
HPARAM_KEYS = {"n_draws", "seed", "space", "include_defaults", "method_space"}
DEFAULT_MODULE_KEY = "model.init_args.recalibration"
DEFAULT_HELD_OUT_KEY = "data.init_args.held_out_domains"
DEFAULT_SEED_KEY = "seed_everything"
REPO_ROOT = Path(__file__).resolve().parents[2]


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; raises SweepSpecError naming the setting and the fix."""
    path = Path(path)
    if not path.is_file():
        raise SweepSpecError(f"{path}: no such sweep file (see configs/sweeps/ for examples)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SweepSpecError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise SweepSpecError(f"{path}: expected a mapping of settings (name, entry, configs, ...)")

    def fail(setting: str, problem: str) -> SweepSpecError:
        return SweepSpecError(f"{path}: {setting}: {problem}")

    unknown = sorted(set(raw) - SPEC_KEYS)
    if unknown:
        raise fail(", ".join(unknown), f"unknown setting(s); valid: {', '.join(sorted(SPEC_KEYS))}")
    for required in ("name", "entry", "configs"):
        if required not in raw:
            raise fail(required, "missing (required: name, entry, configs)")
    name = raw["name"]
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise fail("name", f"{name!r} must be letters, digits, '-' or '_' (it names folders)")
    entry = raw["entry"]
    if not isinstance(entry, str) or not (REPO_ROOT / "experiments" / f"{entry}.py").is_file():
        choices = sorted(
            p.stem for p in (REPO_ROOT / "experiments").glob("*.py") if "run_cli" in p.read_text()
        )
        raise fail("entry", f"{entry!r} is not a training entry point; one of {choices}")
    configs = raw["configs"]
    if isinstance(configs, str):
        configs = [configs]
    if not isinstance(configs, list) or not configs:
        raise fail("configs", "a non-empty list of config files (as for repeated --config)")
    config_paths = []
    for config in configs:
        config_path = Path(config)
        if not config_path.is_absolute():
            config_path = REPO_ROOT / config_path
        if not config_path.is_file():
            raise fail("configs", f"{config} does not exist (paths are relative to the project)")
        config_paths.append(config_path)

    fixed = _settings(raw.get("fixed") or {}, "fixed", fail)
    grid_raw = _settings(raw.get("grid") or {}, "grid", fail)
    grid = {}
    for key, values in grid_raw.items():
        if not isinstance(values, list) or not values:
            raise fail(f"grid.{key}", f"a non-empty list of values, got {values!r}")
        grid[key] = values
    seeds = raw.get("seeds", 1)
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
        seeds = list(range(seeds))
    elif not (
        isinstance(seeds, list)
        and seeds
        and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        and len(set(seeds)) == len(seeds)
    ):
        raise fail("seeds", f"a count >= 1 or a list of distinct integers, got {seeds!r}")

    hparams = raw.get("hparams") or {}
    if not isinstance(hparams, dict):
        raise fail("hparams", "a mapping with n_draws, seed, space")
    unknown = sorted(set(hparams) - HPARAM_KEYS)
    if unknown:
        raise fail(f"hparams.{unknown[0]}", f"unknown; valid: {', '.join(sorted(HPARAM_KEYS))}")
    n_draws = hparams.get("n_draws", 0)
    if not isinstance(n_draws, int) or n_draws < 0:
        raise fail("hparams.n_draws", f"a count >= 0, got {n_draws!r}")
    space = _settings(hparams.get("space") or {}, "hparams.space", fail)
    for key, distribution in space.items():
        check_distribution(distribution, f"hparams.space.{key}", fail)
    cases = _cases(raw.get("cases") or {}, fail)
    space_keys, grid_keys, fixed_keys = set(space), set(grid), set(fixed)
    case_keys = {key for axis in cases.values() for case in axis.values() for key in case}
    overlap = sorted(
        (space_keys & grid_keys)
        | (space_keys & fixed_keys)
        | (grid_keys & fixed_keys)
        | (case_keys & (space_keys | grid_keys | fixed_keys))
    )
    if overlap:
        raise fail(
            overlap[0], "set in more than one of fixed, grid, cases, hparams.space; keep one"
        )
    clash = sorted(set(cases) & (grid_keys | case_keys))
    if clash:
        raise fail(f"cases.{clash[0]}", "an axis name that is also a setting; rename the axis")
    method_axis = read_method_axis(raw, hparams, grid, fixed, space, fail)
    if n_draws and not space and not searched_options(method_axis):
        raise fail(
            "hparams.space",
            "n_draws > 0 needs at least one distribution to draw from (or "
            "`method_space: true` with a method that has a search_space)",
        )

    seed_keys = raw.get("seed_key", DEFAULT_SEED_KEY)
    seed_keys = [seed_keys] if isinstance(seed_keys, str) else seed_keys
    if not isinstance(seed_keys, list) or not all(isinstance(k, str) for k in seed_keys or [0]):
        raise fail("seed_key", f"a setting name or a list of them, got {seed_keys!r}")
    taken = sorted(set(seed_keys) & (space_keys | grid_keys | fixed_keys | case_keys))
    if taken:
        raise fail(taken[0], "is a seed_key (set by the trial seed); remove it from fixed/grid")
    module_key = raw.get("module_key", DEFAULT_MODULE_KEY)
    if module_key not in grid and module_key not in fixed:
        raise fail(
            "module_key",
            f"{module_key!r} is neither in grid nor in fixed; the report groups trials by it "
            f"(add e.g. `grid: {{{module_key}: [none, srm]}}`)",
        )
    modules = [str(m) for m in grid.get(module_key, [fixed.get(module_key)])]
    baseline = str(raw.get("baseline", "none"))
    baseline_method = str(raw.get("baseline_method", DEFAULT_BASELINE_METHOD))
    if method_axis.methods and baseline_method not in method_axis.methods:
        raise fail(
            "baseline_method",
            f"{baseline_method!r} is not among the methods {method_axis.methods}; add it to the "
            "grid or name another with `baseline_method:`",
        )
    resources = raw.get("resources") or {"cpu": 1}
    if (
        not isinstance(resources, dict)
        or set(resources) - {"cpu", "gpu"}
        or not all(isinstance(v, int | float) and v >= 0 for v in resources.values())
        or resources.get("cpu", 1) <= 0
    ):
        raise fail("resources", f"{{cpu: N > 0, gpu: M >= 0}} per trial, got {resources!r}")
    max_concurrent = raw.get("max_concurrent_trials")
    if max_concurrent is not None and (not isinstance(max_concurrent, int) or max_concurrent < 1):
        raise fail("max_concurrent_trials", f"null or a count >= 1, got {max_concurrent!r}")
    output_dir = Path(raw.get("output_dir") or f"outputs/sweeps/{name}")
    spec = SweepSpec(
        path=path,
        name=name,
        entry=entry,
        configs=config_paths,
        experiment=str(raw.get("experiment") or f"sweep-{name}"),
        tracking_uri=raw.get("tracking_uri"),
        output_dir=output_dir if output_dir.is_absolute() else Path.cwd() / output_dir,
        fixed=fixed,
        grid=grid,
        cases=cases,
        seeds=seeds,
        seed_keys=seed_keys,
        n_draws=n_draws,
        hparam_seed=int(hparams.get("seed", 0)),
        space=space,
        include_defaults=bool(hparams.get("include_defaults", False)),
        module_key=module_key,
        baseline=baseline,
        held_out_key=str(raw.get("held_out_key", DEFAULT_HELD_OUT_KEY)),
        resources={"cpu": float(resources.get("cpu", 1)), "gpu": float(resources.get("gpu", 0))},
        max_concurrent_trials=max_concurrent,
        method_axis=method_axis,
        baseline_method=baseline_method,
        description=str(raw.get("description") or ""),
        raw=raw,
    )
    if baseline not in modules:
        raise fail("baseline", f"{baseline!r} is not among the modules {modules}; add it")
    return spec


def _settings(value: Any, where: str, fail) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise fail(where, f"a mapping of dotted settings to values, got {value!r}")
    for key in value:
        if not isinstance(key, str) or not key or key.startswith("-") or " " in key:
            raise fail(
                f"{where}.{key}",
                "keys are the CLI's dotted setting names without `--`, e.g. trainer.max_epochs",
            )
    return dict(value)


def _cases(value: Any, fail) -> dict[str, dict[str, dict[str, Any]]]:
    """`cases`: {axis: {label: {dotted setting: value}}}, every level non-empty; a setting is
    set by one axis only (two would race for it)."""
    if not isinstance(value, dict):
        raise fail("cases", f"a mapping of axis names to labelled cases, got {value!r}")
    cases: dict[str, dict[str, dict[str, Any]]] = {}
    owner: dict[str, str] = {}
    for axis, labelled in value.items():
        where = f"cases.{axis}"
        if not isinstance(axis, str) or not axis.replace("_", "").isalnum():
            raise fail(where, "an axis name of letters, digits or '_' (e.g. pair, method)")
        if not isinstance(labelled, dict) or not labelled:
            raise fail(where, f"a non-empty mapping of case labels to settings, got {labelled!r}")
        cases[axis] = {}
        for label, settings in labelled.items():
            if not isinstance(label, str) or not label:
                raise fail(f"{where}.{label}", "case labels are non-empty strings (quote them)")
            if not isinstance(settings, dict) or not settings:
                raise fail(f"{where}.{label}", "a non-empty mapping of dotted settings to values")
            cases[axis][label] = _settings(settings, f"{where}.{label}", fail)
            for key in settings:
                if owner.setdefault(key, axis) != axis:
                    raise fail(f"{where}.{label}.{key}", f"also set by cases.{owner[key]}")
    return cases
