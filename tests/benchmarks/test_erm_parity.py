"""The ERM parity benchmark: its statistics, what each variant's overrides resolve to, and a
tiny run that writes well-formed, resumable results."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import yaml
from scipy import stats

from benchmarks import erm_parity


def fake_runs() -> list[dict]:
    rng = np.random.default_rng(0)
    runs = []
    for variant, shift in (("domainbed", 0.0), ("project", -0.08)):
        for seed in range(3):
            art = 0.45 + shift + rng.normal(0, 0.02)
            runs.append({"variant": variant, "seed": seed, "art_acc": art, "val_acc_mean": 0.7})
    return runs


def test_summary_is_mean_se_and_a_paired_t_interval_over_seeds() -> None:
    runs = fake_runs()
    rows = {row["variant"]: row for row in erm_parity.summarize(runs)}
    project = np.array([r["art_acc"] for r in runs if r["variant"] == "project"])
    baseline = np.array([r["art_acc"] for r in runs if r["variant"] == "domainbed"])
    assert rows["project"]["art_acc"] == f"{project.mean():.3f} ± {stats.sem(project):.3f}"
    difference = project - baseline
    low, high = stats.t.interval(
        0.95, len(difference) - 1, loc=difference.mean(), scale=stats.sem(difference)
    )
    assert rows["project"]["art_acc_minus_domainbed"] == (
        f"{difference.mean():+.3f} [{low:+.3f}, {high:+.3f}]"
    )
    assert "art_acc_minus_domainbed" not in rows["domainbed"]
    assert list(rows) == ["project", "domainbed"]  # the variants' order


def resolved_variant(name: str) -> dict:
    from experiments.officehome import main

    output = io.StringIO()
    args = ["fit", "--config", str(erm_parity.CONFIG), *erm_parity.VARIANTS[name][1]]
    with contextlib.redirect_stdout(output), pytest.raises(SystemExit):
        main([*args, "--print_config"])
    return yaml.safe_load(output.getvalue())


@pytest.mark.slow
def test_each_variant_changes_what_it_says_from_the_domainbed_protocol() -> None:
    domainbed = resolved_variant("domainbed")
    project = resolved_variant("project")
    model, data = project["model"]["init_args"], project["data"]["init_args"]
    assert (model["domain_heads"], model["shared_head"]) == (True, False)
    assert data["augmentation"]["scale"] == [0.08, 1.0]
    assert (data["augmentation"]["hue"], data["augmentation"]["grayscale"]) == (None, 0.0)
    assert data["augmentation"]["evaluation"] == "center_crop"
    assert data["batch_size_per_domain"] == 32 and model["optimizer"]["init_args"]["lr"] == 5e-5
    frozen = resolved_variant("domainbed+frozen_bn")
    assert [c["class_path"] for c in frozen["trainer"]["callbacks"]] == [erm_parity.FREEZE_BN]
    frozen["trainer"]["callbacks"] = domainbed["trainer"]["callbacks"]
    assert frozen == domainbed
    augmentation = resolved_variant("domainbed+project_augmentation")["data"]["init_args"]
    assert augmentation["augmentation"]["evaluation"] == "resize"
    assert augmentation["augmentation"]["color_jitter_p"] == 0.8


@pytest.mark.slow
def test_a_tiny_run_writes_results_and_resumes_without_repeating(tmp_path) -> None:
    arguments = ["--quick", "--variants", "domainbed", "domainbed+both_heads", "--seeds", "0", "1"]
    erm_parity.main([*arguments, "--results-dir", str(tmp_path)])
    result = json.loads((tmp_path / "erm_parity.json").read_text())
    assert [(r["variant"], r["seed"]) for r in result["runs"]] == [
        ("domainbed", 0),
        ("domainbed", 1),
        ("domainbed+both_heads", 0),
        ("domainbed+both_heads", 1),
    ]
    for run in result["runs"]:
        assert 0 <= run["art_acc"] <= 1 and 0 <= run["val_acc_mean_augmented"] <= 1
        assert ("art_acc_mean_of_heads" in run) == (run["variant"] == "domainbed+both_heads")
    markdown = (tmp_path / "erm_parity.md").read_text()
    assert markdown.startswith("# Benchmark: erm_parity") and "Command: `python -m" in markdown
    erm_parity.main([*arguments, "--results-dir", str(tmp_path)])  # nothing left to run
    again = json.loads((tmp_path / "erm_parity.json").read_text())
    assert again["runs"] == result["runs"]
