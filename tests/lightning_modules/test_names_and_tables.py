"""The metric-key builders of `lightning_modules/names.py` and the shared Markdown table."""

from __future__ import annotations

from lightning_modules.names import (
    ACC_MEAN,
    PRUNE,
    domain_metric_key,
    domain_metric_name,
    domain_metric_prefix,
    metric_key,
    stage_prefix,
)
from lightning_modules.tables import markdown_table


def test_keys_are_built_from_their_parts() -> None:
    assert metric_key("val", ACC_MEAN) == "val/acc_mean"
    assert domain_metric_name("Real World") == "acc/Real_World"
    assert domain_metric_key("test", "Real World") == "test/acc/Real_World"
    assert domain_metric_key("val", "Art", "style_acc") == "val/style_acc/Art"
    assert metric_key(f"{PRUNE}/gate", ACC_MEAN) == "prune/gate/acc_mean"
    # Every per-domain key starts with its prefix, and nothing else of the stage does.
    key = domain_metric_key("val", "Real World")
    assert key.startswith(domain_metric_prefix("val")) and key.startswith(stage_prefix("val"))
    assert not metric_key("val", ACC_MEAN).startswith(domain_metric_prefix("val"))
    assert domain_metric_name("Clipart").startswith(domain_metric_prefix(None))
    assert key.removeprefix(domain_metric_prefix("val")) == "Real_World"


def test_markdown_table_reads_back_as_its_cells() -> None:
    header = ["module", "Art", "mean"]
    rows = [["none", "61.2", "70.1 ± 0.3"], ["srm", "63.0", "71.4 ± 0.2"]]
    lines = markdown_table(header, rows).splitlines()
    assert len(lines) == 2 + len(rows)
    # GitHub's table syntax: cells between pipes, and a separator of one `---` per column.
    assert lines[1].strip("|").split("|") == ["---"] * len(header)

    def cells(line: str) -> list[str]:
        return [
            cell.strip() for cell in line.strip().removeprefix("|").removesuffix("|").split("|")
        ]

    assert cells(lines[0]) == header
    assert [cells(line) for line in lines[2:]] == rows
    assert markdown_table(header, []).count("\n") == 1
