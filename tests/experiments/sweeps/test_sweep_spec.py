"""The sweep file: expansion into trials, paired hyperparameter draws, stable hashes, and the
errors a wrong file gets."""

from __future__ import annotations

import pytest

from datamodules.base import MultiDomainDataModule
from experiments.sweeps.spec import SweepSpecError, load_spec
from experiments.sweeps.trials import fit_arguments
from lightning_modules.cli import ParsedConfig
from tests.helpers.paths import REPO
from tests.helpers.sweeps import write


def test_trials_are_grid_times_draws_times_seeds_with_paired_draws(tmp_path):
    spec = load_spec(
        write(
            tmp_path,
            grid={"model.init_args.recalibration": ["none", "srm", "se"]},
            seeds=2,
            hparams={
                "n_draws": 3,
                "seed": 7,
                "space": {
                    "model.init_args.optimizer.init_args.lr": {"log_uniform": [1e-4, 1e-2]},
                    "data.init_args.batch_size": {"choice": [16, 32]},
                    "model.init_args.label_smoothing": {"uniform": [0.0, 0.2]},
                    "trainer.max_epochs": {"int_uniform": [2, 5]},
                },
            },
        )
    )
    trials = spec.trials()
    assert len(trials) == 3 * 3 * 2
    # Every module sees the same draws: the comparison between modules is paired.
    by_module = {}
    for trial in trials:
        by_module.setdefault(spec.module_of(trial), set()).add(
            (trial.draw, trial.seed, tuple(sorted(trial.hparams.items())))
        )
    assert len({frozenset(v) for v in by_module.values()}) == 1
    draws = spec.draws()
    assert len({tuple(sorted(d.items())) for d in draws}) == 3  # the draws differ
    for draw in draws:
        assert 1e-4 <= draw["model.init_args.optimizer.init_args.lr"] <= 1e-2
        assert draw["data.init_args.batch_size"] in (16, 32)
        assert isinstance(draw["trainer.max_epochs"], int) and 2 <= draw["trainer.max_epochs"] <= 5
    # Seeded: the same file gives the same draws; another search seed other draws.
    assert load_spec(spec.path).draws() == draws
    assert len({t.hash for t in trials}) == len(trials)
    assert trials[0].overrides["seed_everything"] == trials[0].seed


def test_hash_is_stable_and_follows_the_resolved_config(tmp_path):
    first = load_spec(write(tmp_path, grid={"model.init_args.recalibration": ["none", "srm"]}))
    hashes = [t.hash for t in first.trials()]
    assert [t.hash for t in load_spec(first.path).trials()] == hashes
    # Adding a module keeps the existing trials' hashes (a sweep can grow).
    modules = ["none", "srm", "ge"]
    grown = load_spec(write(tmp_path, grid={"model.init_args.recalibration": modules}))
    assert set(hashes) <= {t.hash for t in grown.trials()}
    # A changed fixed setting (or base config) makes new trials.
    changed = load_spec(
        write(
            tmp_path,
            grid={"model.init_args.recalibration": ["none", "srm"]},
            fixed={"trainer.max_epochs": 3},
        )
    )
    assert not set(hashes) & {t.hash for t in changed.trials()}


def test_the_shipped_sweeps_are_valid_and_their_trials_parse():
    paths = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))
    assert len(paths) >= 3
    for path in paths:
        spec = load_spec(path)
        trials = spec.trials()
        assert trials and spec.baseline in {spec.module_of(t) for t in trials}, path
        # The first and the last trial's command lines are valid `fit` arguments.
        for trial in (trials[0], trials[-1]):
            # Any dataset's DataModule (the sweeps cover Office-Home, PACS, VLCS).
            parsed = ParsedConfig(MultiDomainDataModule, fit_arguments(spec, trial)).config
            assert parsed["seed_everything"] == trial.seed
            module = parsed["model"]["init_args"]["recalibration"]
            assert module == spec.module_of(trial), path
            if spec.method_of(trial):  # a sweep with a method axis
                assert parsed["model"]["init_args"]["method"] == spec.method_of(trial), path


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"entry": "nowhere"}, "entry: 'nowhere' is not a training entry point"),
        ({"configs": ["configs/missing.yaml"]}, "configs/missing.yaml does not exist"),
        ({"grid": {"model.init_args.recalibration": []}}, "a non-empty list of values"),
        ({"grid": {"model.init_args.recalibration": ["srm"]}}, "baseline: 'none' is not among"),
        ({"grid": {"trainer.max_epochs": [1]}}, "module_key"),
        ({"seeds": 0}, "seeds: a count >= 1"),
        ({"sede": 3}, "sede: unknown setting"),
        (
            {"hparams": {"n_draws": 2, "space": {"x.lr": {"log_normal": [1, 2]}}}},
            "unknown distribution 'log_normal'",
        ),
        (
            {"hparams": {"n_draws": 2, "space": {"x.lr": {"log_uniform": [0, 1]}}}},
            "log_uniform needs low > 0",
        ),
        (
            {"hparams": {"n_draws": 2, "space": {"x.lr": {"uniform": [2, 1]}}}},
            "low must be below high",
        ),
        ({"hparams": {"n_draws": 2}}, "needs at least one distribution"),
        ({"fixed": {"--trainer.max_epochs": 2}}, "without `--`"),
    ],
)
def test_validation_errors_name_the_file_and_the_setting(tmp_path, settings, message):
    base = {"grid": {"model.init_args.recalibration": ["none", "srm"]}}
    path = write(tmp_path, **{**base, **settings})
    with pytest.raises(SweepSpecError, match=r"sweep\.yaml") as error:
        load_spec(path)
    assert message in str(error.value)


def test_not_a_mapping_and_missing_file(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(SweepSpecError, match="expected a mapping"):
        load_spec(path)
    with pytest.raises(SweepSpecError, match="no such sweep file"):
        load_spec(tmp_path / "nope.yaml")


def test_the_command_reports_a_bad_file_in_one_line(tmp_path):
    from experiments import sweep

    path = write(tmp_path, grid={"model.init_args.recalibration": ["srm"]})
    with pytest.raises(SystemExit) as stop:
        sweep.main(["status", str(path)])
    assert str(stop.value).startswith("error: ") and "baseline" in str(stop.value)
