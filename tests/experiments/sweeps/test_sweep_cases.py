"""`cases` in a sweep file: axes whose values are labelled sets of settings applied together
(a source -> target pair, a method with its own learning rate), crossed with the grid."""

from __future__ import annotations

import pytest

from experiments.sweeps.spec import SweepSpecError, load_spec
from experiments.sweeps.trials import fit_arguments, trial_run_name, trial_tags
from tests.helpers.sweeps import write

DOMAINS = "data.init_args.domains"
TARGETS = "data.init_args.target_domains"
METHOD = "model.init_args.method"
LR = "model.init_args.optimizer.init_args.lr"
PAIRS = {
    "Ar2Cl": {DOMAINS: ["Art", "Clipart"], TARGETS: ["Clipart"]},
    "Cl2Ar": {DOMAINS: ["Clipart", "Art"], TARGETS: ["Art"]},
}
METHODS = {"erm": {METHOD: "erm"}, "mcc": {METHOD: "mcc", LR: 0.005}}


def test_cases_cross_the_grid_and_set_their_settings_together(tmp_path) -> None:
    spec = load_spec(
        write(
            tmp_path,
            grid={"model.init_args.recalibration": ["none", "srm"]},
            cases={"pair": PAIRS, "method": METHODS},
            fixed={"trainer.max_epochs": 2},
            seeds=2,
        )
    )
    trials = spec.trials()
    assert len(trials) == 2 * 2 * 2 * 2
    seen = set()
    for trial in trials:
        pair, method = trial.grid_point["pair"], trial.grid_point["method"]
        seen.add((trial.grid_point["model.init_args.recalibration"], pair, method, trial.seed))
        # every setting of both cases, and only theirs, on top of the fixed ones
        assert trial.overrides[DOMAINS] == PAIRS[pair][DOMAINS]
        assert trial.overrides[TARGETS] == PAIRS[pair][TARGETS]
        assert trial.overrides[METHOD] == method
        assert (LR in trial.overrides) == (method == "mcc")
        assert trial.overrides["trainer.max_epochs"] == 2
        # in the axes' order (the file's; yaml.safe_dump sorted it here)
        labels = [trial.grid_point[axis] for axis in spec.cases]
        assert list(spec.cases) == ["method", "pair"] and spec.case_labels(trial) == labels
        assert f"-{method}-{pair}-" in trial_run_name(spec, trial)
        tags = trial_tags(spec, trial, "parent")
        assert (tags["setting.pair"], tags["setting.method"]) == (pair, method)
        # the case's settings reach the command line, after the fixed ones
        arguments = fit_arguments(spec, trial)
        assert f"--{TARGETS}={PAIRS[pair][TARGETS]}".replace("'", '"') in arguments
    assert len(seen) == len(trials) == len({t.hash for t in trials})


def test_a_grid_without_cases_expands_as_before(tmp_path) -> None:
    spec = load_spec(write(tmp_path, grid={"model.init_args.recalibration": ["none", "srm"]}))
    assert spec.cases == {}
    for trial in spec.trials():
        assert trial.grid_point == {"model.init_args.recalibration": spec.module_of(trial)}
        assert spec.case_labels(trial) == []


@pytest.mark.parametrize(
    ("cases", "extra", "message"),
    [
        ({"pair": PAIRS}, {"fixed": {TARGETS: ["Art"]}}, "set in more than one of fixed, grid"),
        (
            {"pair": PAIRS, "target": {"x": {TARGETS: ["Art"]}}},
            {},
            "cases.target.x.data.init_args.target_domains: also set by cases.pair",
        ),
        ({"pair": {}}, {}, "cases.pair: a non-empty mapping of case labels"),
        ({"pair": {"Ar2Cl": {}}}, {}, "cases.pair.Ar2Cl: a non-empty mapping of dotted"),
        ({"pair": {1: {TARGETS: ["Art"]}}}, {}, "case labels are non-empty strings"),
        ({"data.init_args.domains": PAIRS}, {}, "axis name of letters, digits or '_'"),
        ({"pair": {"x": {"--trainer.max_epochs": 1}}}, {}, "without `--`"),
        ({"pair": PAIRS}, {"seed_key": TARGETS}, "is a seed_key"),
        ([PAIRS], {}, "cases: a mapping of axis names"),
    ],
)
def test_wrong_cases_are_refused_naming_the_setting(tmp_path, cases, extra, message) -> None:
    grid = {"model.init_args.recalibration": ["none", "srm"]}
    with pytest.raises(SweepSpecError, match=r"sweep\.yaml") as error:
        load_spec(write(tmp_path, grid=grid, cases=cases, **extra))
    assert message in str(error.value)


def test_an_axis_named_like_a_grid_setting_is_refused(tmp_path) -> None:
    grid = {"model.init_args.recalibration": ["none", "srm"], "pair": [1, 2]}
    with pytest.raises(SweepSpecError, match=r"cases\.pair: an axis name that is also a setting"):
        load_spec(write(tmp_path, grid=grid, cases={"pair": PAIRS}))
