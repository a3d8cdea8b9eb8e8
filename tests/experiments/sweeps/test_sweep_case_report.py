"""`collect` on a sweep with `cases` (source -> target pairs, methods given by cases), from
synthetic MLflow trial runs: every (module, method, pair) is selected and reported on its own,
and paired with the baseline on the same pair, seed by seed."""

from __future__ import annotations

import argparse
import csv
import statistics

import pytest
from scipy import stats

from experiments.sweep import best_tag_key, collect
from experiments.sweeps.runs import case_axes, load_records, open_sweep
from experiments.sweeps.selection import Selection
from experiments.sweeps.spec import load_spec
from experiments.sweeps.trials import STATE_TAG, trial_tags
from tests.helpers.sweeps import write

MODULE = "model.init_args.recalibration"
METHOD = "model.init_args.method"
DOMAINS = "data.init_args.domains"
TARGETS = "data.init_args.target_domains"
PAIRS = {
    "Ar2Cl": {DOMAINS: ["Art", "Clipart"], TARGETS: ["Clipart"]},
    "Cl2Ar": {DOMAINS: ["Clipart", "Art"], TARGETS: ["Art"]},
}
METHODS = {
    "erm": {METHOD: "erm"},
    "cdan": {METHOD: "cdan", "model.init_args.optimizer.init_args.lr": 0.005},
}
#: Target accuracy at the selected validation: the pair sets the level (Ar2Cl is far harder),
#: the module and method add to it, and the seed moves each cell its own way.
PAIR_LEVEL = {"Ar2Cl": 0.40, "Cl2Ar": 0.70}
EFFECT = {("none", "erm"): 0.0, ("srm", "erm"): 0.02, ("none", "cdan"): 0.08, ("srm", "cdan"): 0.1}
SEED_SHIFT = {
    (0, "Ar2Cl"): 0.0,
    (1, "Ar2Cl"): 0.03,
    (0, "Cl2Ar"): -0.02,
    (1, "Cl2Ar"): 0.01,
}


def target_accuracy(module: str, method: str, pair: str, seed: int) -> float:
    wobble = 0.005 * seed * (1 if module == "srm" else -1) * (2 if method == "cdan" else 1)
    return PAIR_LEVEL[pair] + EFFECT[(module, method)] + SEED_SHIFT[(seed, pair)] + wobble


def log_trial(client, experiment_id: str, tags: dict[str, str], accuracy: float) -> None:
    """Three validations (steps 9, 19, 29; epochs 0-2); the trained domains peak at the second,
    where the target has `accuracy` (the test metrics say the same)."""
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    source = [0.5, 0.9, 0.8]
    target = [accuracy - 0.1, accuracy, accuracy + 0.05]
    for epoch, step in enumerate((9, 19, 29)):
        client.log_metric(run_id, "epoch", epoch, step=step)
        client.log_metric(run_id, "val/acc_mean", source[epoch], step=step)
        client.log_metric(run_id, "val/acc_held_out_mean", target[epoch], step=step)
    client.log_metric(run_id, "test/acc_held_out_mean", accuracy)
    client.log_metric(run_id, "test/acc_mean", 0.9)
    client.set_tag(run_id, STATE_TAG, "done")
    client.set_terminated(run_id, "FINISHED")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The sweep file, its store with every trial finished, and `collect`'s report."""
    tmp_path = tmp_path_factory.mktemp("cases")
    path = write(
        tmp_path,
        name="pairs",
        grid={MODULE: ["none", "srm"]},
        cases={"pair": PAIRS, "method": METHODS},
        seeds=2,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        output_dir=str(tmp_path / "out"),
    )
    spec = load_spec(path)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)  # the new experiment's artifacts go under ./mlruns
        client, experiment_id, parent = open_sweep(spec, spec.tracking_uri)
        for trial in spec.trials():
            module, method = spec.module_of(trial), spec.method_of(trial)
            accuracy = target_accuracy(module, method, trial.grid_point["pair"], trial.seed)
            log_trial(client, experiment_id, trial_tags(spec, trial, parent.info.run_id), accuracy)
        args = argparse.Namespace(tracking_uri=None, interval="t")
        report = collect(spec, args)
    return spec, client, experiment_id, parent.info.run_id, report


def paired(module: str, method: str, pair: str) -> tuple[str, str, str]:
    """Independently: the cell minus none + erm on the same pair, by seed, as the report
    prints it: points, Student t interval, wins/pairs."""
    diffs = [
        target_accuracy(module, method, pair, seed) - target_accuracy("none", "erm", pair, seed)
        for seed in (0, 1)
    ]
    mean = statistics.fmean(diffs)
    half = stats.t.ppf(0.975, 1) * statistics.stdev(diffs) / 2**0.5
    interval = f"[{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}]"
    return f"{100 * mean:+.1f}", interval, f"{sum(d > 0 for d in diffs)}/2"


def test_the_pair_axis_keeps_trials_apart_and_the_method_axis_names_rows(swept):
    spec, client, experiment_id, parent_id, _ = swept
    assert case_axes(spec) == ["pair"]  # `method` only names the row: `srm+cdan`
    records = load_records(client, spec, experiment_id, parent_id)
    assert {(r.module, r.cases, r.held_out) for r in records} == {
        (variant, (("pair", pair),), (target,))
        for variant in ("none", "srm", "none+cdan", "srm+cdan")
        for pair, target in (("Ar2Cl", "Clipart"), ("Cl2Ar", "Art"))
    }
    # Epoch-based history, keyed by the step each validation was logged at.
    assert records[0].history["val/acc_mean"] == {9: 0.5, 19: 0.9, 29: 0.8}
    assert records[0].validation_epochs == {9: 0, 19: 1, 29: 2}


def test_collect_selects_and_reports_every_pair_and_pairs_within_it(swept):
    spec, client, _, parent_id, report = swept
    tables = report.split("\n## ")
    accuracy_part = next(t for t in tables if t.startswith("Test accuracy of the held-out"))
    assert "| module | pair | Art | Clipart | average | seeds |" in accuracy_part
    for module, method, pair in (("srm", "cdan", "Ar2Cl"), ("none", "erm", "Cl2Ar")):
        values = [target_accuracy(module, method, pair, seed) for seed in (0, 1)]
        mean = statistics.fmean(values)
        cell = f"{100 * mean:.1f} ± {100 * statistics.stdev(values) / 2**0.5:.1f}"
        label = module if method == "erm" else f"{module}+{method}"
        # The target's column (Clipart for Ar2Cl, Art for Cl2Ar), and the average over it.
        columns = f"- | {cell}" if pair == "Ar2Cl" else f"{cell} | -"
        assert f"| {label} | {pair} | {columns} | {cell} | 2 |" in accuracy_part, accuracy_part
    # Each row against `none` on its own pair: pooled over pairs, the pair's level would move it.
    paired_part = accuracy_part.split("### Paired against `none`")[1].split("###")[0]
    for module, method in (("srm", "erm"), ("none", "cdan"), ("srm", "cdan")):
        label = module if method == "erm" else f"{module}+{method}"
        for pair in PAIRS:
            points, interval, wins = paired(module, method, pair)
            row = f"| {label} | {pair} | {points} | {interval} | {wins} | 2 | t |"
            assert row in paired_part, (row, paired_part)
    # The module x method tables: a row per module and pair, each cell minus none + erm there.
    matrix = accuracy_part.split("each cell minus `none + erm`")[1]
    assert "| module | pair | erm | cdan |" in matrix
    cells = [" ".join(paired("srm", method, "Ar2Cl")) for method in ("erm", "cdan")]
    assert f"| srm | Ar2Cl | {cells[0]} | {cells[1]} |" in matrix, matrix
    assert "| none | Cl2Ar | (baseline) |" in matrix
    # Selection: every (row, pair, seed) has its own pick, at the validation of step 19.
    selection = next(t for t in tables if t.startswith("Model selection"))
    assert "| training_domain_validation | srm+cdan | Ar2Cl | - |" in selection
    run_tags = client.get_run(parent_id).data.tags
    key = "training_domain_validation.srm_cdan.Ar2Cl.Clipart"
    assert run_tags[f"best_step.{key}"] == "19" and run_tags[f"best_epoch.{key}"] == "1"
    assert run_tags[f"best_checkpoint.{key}"] == "(not kept)"  # no fit wrote checkpoints
    trials = list(csv.DictReader((spec.output_dir / "report" / "trials.csv").open()))
    assert {(t["module"], t["method"], t["pair"]) for t in trials} >= {
        ("srm+cdan", "cdan", "Ar2Cl"),
        ("none", "erm", "Cl2Ar"),
    }
    results = list(csv.DictReader((spec.output_dir / "report" / "results.csv").open()))
    differences = {
        (r["module"], r["pair"]): float(r["mean"]) for r in results if r["kind"] == "paired"
    }
    diff = [
        target_accuracy("srm", "cdan", "Cl2Ar", s) - target_accuracy("none", "erm", "Cl2Ar", s)
        for s in (0, 1)
    ]
    assert differences[("srm+cdan", "Cl2Ar")] == pytest.approx(statistics.fmean(diff))


def test_best_checkpoint_tags_are_valid_mlflow_keys(swept):
    """Case labels and held-out sets of several domains (`Art+Clipart`, `Real World`) become
    tag-safe parts; MLflow refuses `+`."""
    _, client, _, parent_id, _ = swept
    pick = Selection(
        method="training_domain_validation",
        module="srm+coral",
        held_out="Art+Real World",
        seed=0,
        draw=0,
        step=19,
        epoch=1,
        score=0.5,
        accuracy=0.5,
        run_id="run",
        trial_hash="hash",
        checkpoint="",
        cases=(("pair", "Ar2Cl"),),
    )
    key = best_tag_key(pick)
    assert key == "training_domain_validation.srm_coral.Ar2Cl.Art_Real_World"
    client.set_tag(parent_id, f"best_step.{key}", "19")  # accepted
    assert client.get_run(parent_id).data.tags[f"best_step.{key}"] == "19"


def test_a_case_axis_that_does_not_name_the_row_stays_a_column(tmp_path):
    """Two cases of one method (two learning rates for MCC) give the same row label: their
    labels must stay apart, so the axis is a column; so is an axis that sets no method."""
    lr = "model.init_args.optimizer.init_args.lr"
    recipes = {
        "erm": {METHOD: "erm"},
        "mcc_low": {METHOD: "mcc", lr: 0.001},
        "mcc_high": {METHOD: "mcc", lr: 0.01},
    }
    spec = load_spec(
        write(tmp_path, grid={MODULE: ["none", "srm"]}, cases={"pair": PAIRS, "recipe": recipes})
    )
    assert case_axes(spec) == ["pair", "recipe"]
    spec = load_spec(
        write(tmp_path, grid={MODULE: ["none", "srm"]}, cases={"pair": PAIRS, "method": METHODS})
    )
    assert case_axes(spec) == ["pair"]
