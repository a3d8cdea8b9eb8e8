"""The training method as a sweep axis: trials per module x method, each method's options drawn
from its own search space, draws paired across modules, and the errors a wrong file gets."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from experiments.sweeps.distributions import check_distribution
from experiments.sweeps.method_axis import METHOD_KWARGS_KEY
from experiments.sweeps.spec import SweepSpecError, load_spec
from experiments.sweeps.trials import fit_arguments, trial_run_name, trial_tags
from lightning_modules.methods import TRAINING_METHODS, create_method

DEMO = "configs/officehome/demo.yaml"
MODULE = "model.init_args.recalibration"
METHOD = "model.init_args.method"
LR = "model.init_args.optimizer.init_args.lr"


def write(tmp_path: Path, name: str = "sweep.yaml", **settings) -> Path:
    spec = {"name": "t", "entry": "officehome", "configs": [DEMO], **settings}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def method_sweep(
    tmp_path: Path,
    modules=("none", "srm"),
    methods=("erm", "coral", "mixstyle"),
    name="sweep.yaml",
    **settings,
) -> Path:
    hparams = {
        "n_draws": 4,
        "seed": 3,
        "include_defaults": True,
        "method_space": True,
        "space": {LR: {"log_uniform": [1e-4, 1e-2]}},
    }
    return write(
        tmp_path,
        name,
        grid={MODULE: list(modules), METHOD: list(methods)},
        seeds=2,
        hparams=hparams,
        **settings,
    )


def options_by_cell(spec) -> dict[tuple[str, str], dict[tuple[int, int], tuple]]:
    """(module, method) -> {(draw, seed): (lr, method options)}."""
    cells: dict[tuple[str, str], dict] = defaultdict(dict)
    for trial in spec.trials():
        cell = (spec.module_of(trial), spec.method_of(trial))
        options = trial.overrides.get(METHOD_KWARGS_KEY)
        cells[cell][(trial.draw, trial.seed)] = (trial.overrides.get(LR), repr(options))
    return cells


def test_each_draw_gives_every_module_the_same_method_options(tmp_path):
    spec = load_spec(method_sweep(tmp_path))
    cells = options_by_cell(spec)
    for method in ("erm", "coral", "mixstyle"):
        # Paired: draw i of `none+coral` and of `srm+coral` are the same configuration.
        assert cells[("none", method)] == cells[("srm", method)], method
    coral = cells[("none", "coral")]
    # Draw 0 (include_defaults) is every method's constructor defaults and the base lr.
    assert coral[(0, 0)] == (None, repr({}))
    # The other draws differ, each option inside the method's own search space.
    gammas = set()
    for trial in spec.trials():
        options = trial.overrides[METHOD_KWARGS_KEY]
        if spec.method_of(trial) == "coral" and trial.draw:
            assert 0.1 <= options["mmd_gamma"] <= 10.0  # CORAL's 10^U(-1, 1)
            gammas.add(options["mmd_gamma"])
        if spec.method_of(trial) == "mixstyle" and trial.draw:
            assert set(options) == {"p", "alpha"}
            assert options["p"] in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
        if spec.method_of(trial) == "erm":
            assert options == {}
    assert len(gammas) == 3
    # The shared hyperparameters are paired across methods as well: draw i, one lr.
    lrs = {(m, d): v[0] for (mod, m), cell in cells.items() for (d, _), v in cell.items()}
    for draw in (1, 2, 3):
        assert lrs[("coral", draw)] == lrs[("mixstyle", draw)] == lrs[("erm", draw)]


def test_method_draws_do_not_depend_on_the_grid_around_them(tmp_path):
    """A draw is a function of (search seed, draw, method, option): reordering the modules,
    adding a module or another method leaves every existing cell's draws as they were."""
    first = options_by_cell(load_spec(method_sweep(tmp_path, name="a.yaml")))
    grown = options_by_cell(
        load_spec(
            method_sweep(
                tmp_path, ("srm", "se", "none"), ("mixstyle", "mmd", "erm", "coral"), "b.yaml"
            )
        )
    )
    for cell, draws in first.items():
        assert grown[cell] == draws, cell


def test_erm_without_options_runs_once_per_seed_not_once_per_draw(tmp_path):
    """With nothing shared to draw, ERM's draws would repeat one configuration (one hash):
    the repeats are left out, the methods with options keep every draw."""
    path = write(
        tmp_path,
        grid={MODULE: ["none", "srm"], METHOD: ["erm", "groupdro"]},
        seeds=2,
        hparams={"n_draws": 3, "method_space": True},
    )
    spec = load_spec(path)
    counts = defaultdict(int)
    for trial in spec.trials():
        counts[spec.variant_of(trial)] += 1
    assert counts == {"none": 2, "srm": 2, "none+groupdro": 6, "srm+groupdro": 6}
    assert len({t.hash for t in spec.trials()}) == len(spec.trials())


def test_variant_labels_baseline_and_what_a_trial_carries(tmp_path):
    spec = load_spec(method_sweep(tmp_path))
    assert spec.variants() == [
        "none", "srm", "none+coral", "srm+coral", "none+mixstyle", "srm+mixstyle",
    ]  # fmt: skip
    assert spec.baseline_variant == "none"
    trial = next(t for t in spec.trials() if spec.method_of(t) == "coral" and t.draw == 2)
    arguments = fit_arguments(spec, trial)
    assert f"--{METHOD}=coral" in arguments
    gamma = trial.overrides[METHOD_KWARGS_KEY]["mmd_gamma"]
    assert f'--{METHOD_KWARGS_KEY}={{"mmd_gamma": {gamma}}}' in arguments
    assert trial_run_name(spec, trial).startswith(f"{spec.module_of(trial)}+coral-s")
    tags = trial_tags(spec, trial, "parent")
    assert tags["sweep.method"] == "coral" and tags["sweep.module"] == spec.module_of(trial)
    # A sweep without a method axis: labels are the modules, no method tag.
    plain = load_spec(write(tmp_path, "plain.yaml", grid={MODULE: ["none", "srm"]}))
    assert plain.variants() == ["none", "srm"]
    assert "sweep.method" not in trial_tags(plain, plain.trials()[0], "parent")
    assert METHOD_KWARGS_KEY not in plain.trials()[0].overrides


def test_fixed_options_per_method_are_kept_and_not_drawn(tmp_path):
    path = method_sweep(tmp_path, method_kwargs={"mixstyle": {"mix": "crossdomain", "p": 0.3}})
    spec = load_spec(path)
    for trial in spec.trials():
        if spec.method_of(trial) == "mixstyle":
            options = trial.overrides[METHOD_KWARGS_KEY]
            assert options["mix"] == "crossdomain" and options["p"] == 0.3
            assert ("alpha" in options) == (trial.draw > 0)


@pytest.mark.parametrize("name", sorted(TRAINING_METHODS))
def test_every_registered_search_space_draws_options_its_method_accepts(tmp_path, name):
    """Each method's `search_space` is in the sweep files' vocabulary, and every draw builds."""
    method = TRAINING_METHODS[name]

    def fail(setting, problem):
        return AssertionError(f"{name}: {setting}: {problem}")

    for option, distribution in method.search_space.items():
        check_distribution(distribution, option, fail)
    if not method.search_space:
        return
    path = write(
        tmp_path,
        grid={MODULE: ["none"], METHOD: ["erm", name] if name != "erm" else ["erm"]},
        hparams={"n_draws": 4, "seed": 1, "method_space": True},
    )
    spec = load_spec(path)
    for trial in spec.trials():
        if spec.method_of(trial) == name:
            options = trial.overrides[METHOD_KWARGS_KEY]
            assert set(options) == set(method.search_space)
            for value in options.values():
                assert not (isinstance(value, float) and math.isnan(value))
            create_method(name, options)  # the constructor takes every drawn value


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"grid": {MODULE: ["none"], METHOD: ["erm", "koral"]}},
            "grid.model.init_args.method: unknown training method 'koral'; valid: erm, ",
        ),
        (
            {"grid": {MODULE: ["none"]}, "fixed": {METHOD: "koral"}},
            "fixed.model.init_args.method: unknown training method 'koral'",
        ),
        (
            {"grid": {MODULE: ["none"]}, "hparams": {"n_draws": 2, "method_space": True}},
            "hparams.method_space: needs the methods in grid or fixed",
        ),
        (
            {"grid": {MODULE: ["none"], METHOD: ["erm", "coral"]}, "hparams": {"method_space": 1}},
            "hparams.method_space: true or false",
        ),
        (
            {
                "grid": {MODULE: ["none"], METHOD: ["erm", "coral"]},
                "hparams": {"method_space": True},
            },
            "hparams.method_space: draws nothing without hparams.n_draws >= 1",
        ),
        (
            {
                "grid": {MODULE: ["none"], METHOD: ["erm", "coral"]},
                "fixed": {METHOD_KWARGS_KEY: {"mmd_gamma": 1.0}},
            },
            "fixed.model.init_args.method_kwargs: set by the method axis",
        ),
        (
            {"grid": {MODULE: ["none"], METHOD: ["coral"]}},
            "baseline_method: 'erm' is not among the methods ['coral']",
        ),
        (
            {
                "grid": {MODULE: ["none"], METHOD: ["erm", "coral"]},
                "method_kwargs": {"coral": {"gamma": 1.0}},
            },
            "method_kwargs.coral: Training method 'coral' (CORAL) has no option 'gamma'; "
            "valid options: mmd_gamma=1.0",
        ),
        (
            {
                "grid": {MODULE: ["none"], METHOD: ["erm", "coral"]},
                "method_kwargs": {"mmd": {"mmd_gamma": 1.0}},
            },
            "method_kwargs.mmd: not among the sweep's methods ['erm', 'coral']",
        ),
        (
            {
                "grid": {MODULE: ["none"], METHOD: ["erm"]},
                "hparams": {"n_draws": 2, "method_space": True},
            },
            "n_draws > 0 needs at least one distribution to draw from",
        ),
        (
            {
                "grid": {MODULE: ["none"]},
                "hparams": {"n_draws": 2, "space": {METHOD: {"choice": ["erm", "coral"]}}},
            },
            "hparams.space.model.init_args.method: the method is an axis, not a draw",
        ),
    ],
)
def test_method_axis_errors_name_the_file_the_setting_and_the_fix(tmp_path, settings, message):
    with pytest.raises(SweepSpecError, match=r"sweep\.yaml") as error:
        load_spec(write(tmp_path, **settings))
    assert message in str(error.value)


def test_unknown_method_error_lists_every_registered_method(tmp_path):
    with pytest.raises(SweepSpecError) as error:
        load_spec(write(tmp_path, grid={MODULE: ["none"], METHOD: ["erm", "koral"]}))
    listed = str(error.value).split("valid: ", 1)[1]
    assert all(name in listed for name in TRAINING_METHODS)
