"""The sweep report from synthetic trial records: tables, paired rows, files."""

from __future__ import annotations

import csv

import pytest

from experiments.sweeps.figures import learning_curves
from experiments.sweeps.report import accuracy_tables, comparison_rows, write_report
from experiments.sweeps.selection import TrialRecord, select_all


def records_for(module: str, accuracies: list[float], held_out=()) -> list[TrialRecord]:
    out = []
    for seed, acc in enumerate(accuracies):
        metrics = {
            "test/acc/Art": acc,
            "test/acc/Clipart": acc - 0.1,
            "test/acc_mean": acc - 0.05,
            "test/acc_worst": acc - 0.1,
            "test/acc_held_out_mean": acc,
        }
        history = {"val/acc_mean": {0: acc / 2, 1: acc}, "val/acc_held_out_mean": {0: 0.1, 1: acc}}
        out.append(
            TrialRecord(
                f"{module}{seed}{held_out}",
                module,
                tuple(held_out),
                seed,
                0,
                f"run-{module}-{seed}",
                history,
                metrics,
            )
        )
    return out


def test_multi_domain_report_has_se_paired_rows_and_files(tmp_path):
    records = records_for("none", [0.60, 0.70, 0.80]) + records_for("srm", [0.62, 0.75, 0.81])
    records.append(TrialRecord("x", "srm", (), 3, 0, "run-failed", state="failed"))
    selections = select_all(records)
    report, paths = write_report(records, selections, tmp_path, "none", ["none", "srm"], "Demo")
    (table,) = accuracy_tables([r for r in records if r.state == "done"])
    assert table.columns == ["Art", "Clipart", "mean", "worst"]
    assert table.stat("none", "Art").format() == "70.0 ± 5.8"
    (paired,) = comparison_rows(table, "none")
    assert paired.mean_diff == pytest.approx(0.0267, abs=1e-4) and paired.wins == 3
    assert "| srm | +2.7 |" in report and "70.0 ± 5.8" in report
    assert {"md", "csv", "trials_csv", "tex", "png", "curves_png"} <= set(paths)
    assert r"\pm" in paths["tex"].read_text()
    rows = list(csv.DictReader(paths["csv"].open()))
    assert {r["kind"] for r in rows} == {"accuracy", "paired"}
    trials = list(csv.DictReader(paths["trials_csv"].open()))
    assert len(trials) == 7 and {t["state"] for t in trials} == {"done", "failed"}


def test_held_out_report_averages_over_held_out_sets_per_seed(tmp_path):
    records = []
    for module, base in (("none", 0.5), ("se", 0.6)):
        records += records_for(module, [base, base + 0.1], held_out=["Art"])
        records += records_for(module, [base + 0.2, base + 0.3], held_out=["Clipart"])
    tables = accuracy_tables(records)
    (table,) = tables
    assert table.columns == ["Art", "Clipart", "average"]
    assert table.stat("se", "average").mean == pytest.approx(0.75)
    (paired,) = comparison_rows(table, "none")
    assert paired.mean_diff == pytest.approx(0.1) and paired.n == 2
    report, _ = write_report(records, select_all(records), tmp_path, "none", ["none", "se"])
    assert "test_domain_oracle (oracle)" in report


def test_module_x_method_tables_pair_every_cell_with_none_erm_by_seed(tmp_path):
    """Rows `<module>+<method>`, and module x method tables whose differences are each cell
    minus `none` + `erm` on the same seed and held-out set."""
    accuracy = {
        ("none", "erm"): [0.60, 0.70, 0.65],
        ("srm", "erm"): [0.62, 0.74, 0.64],
        ("none", "coral"): [0.66, 0.71, 0.70],
        ("srm", "coral"): [0.61, 0.69, 0.60],
    }
    records = []
    for (module, method), values in accuracy.items():
        label = module if method == "erm" else f"{module}+{method}"
        for held_out, shift in (("Art", 0.0), ("Clipart", -0.1)):
            for record in records_for(label, [v + shift for v in values], held_out=[held_out]):
                record.recalibration, record.training_method = module, method
                records.append(record)
    order = ["none", "srm", "none+coral", "srm+coral"]
    report, paths = write_report(records, select_all(records), tmp_path, "none", order)
    accuracy_part, paired_part = report.split("each cell minus `none + erm`")[:2]
    assert "| module | erm | coral |" in accuracy_part
    # The held-out average per seed is the mean over Art and Clipart: value - 0.05.
    cells = []
    for method in ("erm", "coral"):
        values = [v - 0.05 for v in accuracy[("srm", method)]]
        mean = sum(values) / 3
        se = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5 / 3**0.5
        cells.append(f"{100 * mean:.1f} ± {100 * se:.1f}")
    assert f"| srm | {cells[0]} | {cells[1]} |" in accuracy_part
    # Independent paired differences against none + erm, seed by seed.
    for module, method in (("srm", "erm"), ("none", "coral"), ("srm", "coral")):
        diffs = [
            a - b
            for a, b in zip(accuracy[(module, method)], accuracy[("none", "erm")], strict=True)
        ]
        mean_diff = sum(diffs) / len(diffs)
        sd = (sum((d - mean_diff) ** 2 for d in diffs) / (len(diffs) - 1)) ** 0.5
        half = 4.302653 * sd / 3**0.5  # t_{0.975, 2}
        wins = sum(d > 0 for d in diffs)
        expected = (
            f"{100 * mean_diff:+.1f} [{100 * (mean_diff - half):+.1f}, "
            f"{100 * (mean_diff + half):+.1f}] {wins}/3"
        )
        assert expected in paired_part, (module, method, expected, paired_part)
    assert "| none | (baseline) |" in paired_part
    trials = list(csv.DictReader(paths["trials_csv"].open()))
    assert {(t["module"], t["recalibration"], t["method"]) for t in trials} >= {
        ("srm+coral", "srm", "coral"),
        ("none", "none", "erm"),
    }


@pytest.mark.parametrize(
    ("steps", "epochs", "x_label", "xs"),
    [
        # One validation per epoch, at steps that differ between runs of other batch sizes.
        ([9, 19], [0, 1], "epoch", [1, 2]),
        # Validation every 6 steps across epochs of 10: epoch 1 holds two validations.
        ([5, 11, 17], [0, 1, 1], "step", [6, 12, 18]),
    ],
)
def test_learning_curves_run_over_epochs_or_over_steps(steps, epochs, x_label, xs):
    records = []
    for seed, shift in enumerate((0.0, 0.1)):
        history = {"val/acc_mean": {s: 0.5 + shift + 0.01 * i for i, s in enumerate(steps)}}
        records.append(
            TrialRecord(
                f"h{seed}",
                "srm",
                (),
                seed,
                0,
                f"run{seed}",
                history,
                validation_epochs=dict(zip(steps, epochs, strict=True)),
            )
        )
    figure = learning_curves(records, ["srm"])
    axes = figure.axes[0]
    assert axes.get_xlabel() == x_label
    (line,) = axes.get_lines()
    assert list(line.get_xdata()) == xs
    # The mean over the two seeds at each validation, in %.
    expected = [100 * (0.55 + 0.01 * i) for i in range(len(steps))]
    assert list(line.get_ydata()) == pytest.approx(expected)
