"""MLflow runs grouped by what they trained (protocol, backbone, module and method, each with
its options), with their values per seed, paired against the baseline: what
`experiments.compare` tabulates.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from mlflow.entities import Run

from experiments.sweeps.matrix import matrix_tables
from experiments.sweeps.statistics import PairedComparison, paired_comparison
from lightning_modules.callbacks.artifacts import NUM_PARAMETERS_KEY
from lightning_modules.names import (
    ACC_HELD_OUT_MEAN,
    ACC_MEAN,
    ACC_WORST,
    STYLE_ROBUSTNESS,
    TEST,
    VAL,
    domain_metric_prefix,
    metric_key,
)

GROUP_TAGS = ("protocol", "backbone", "module")
# A module variant's options (`key=value,...`), empty for the defaults; runs logged before the
# tag existed ran the defaults.
OPTIONS_TAG = "module_options"
# The training method and its options; runs logged before the tags existed ran ERM.
METHOD_TAG = "method"
METHOD_OPTIONS_TAG = "method_options"
PLAIN_METHOD = "erm"
# Columns after the domains: (label, metric name after `<stage>/`).
SUMMARY_COLUMNS = (
    ("mean", ACC_MEAN),
    ("worst", ACC_WORST),
    ("held-out mean", ACC_HELD_OUT_MEAN),
    ("style robustness", STYLE_ROBUSTNESS),
)


@dataclass
class Group:
    """The runs of one protocol x backbone x module x options x method x options setting;
    values per column, one per run."""

    key: tuple[str, ...]
    #: The module's `module_options` tag ('' for its defaults).
    options: str = ""
    #: The training method (`method` tag) and its `method_options` ('' for its defaults).
    method: str = PLAIN_METHOD
    method_options: str = ""
    values: dict[str, list[float]] = field(default_factory=dict)
    parameters: set[int] = field(default_factory=set)
    stages: set[str] = field(default_factory=set)
    run_ids: list[str] = field(default_factory=list)
    #: column -> {seed tag: value}: what the paired comparison matches runs by.
    by_seed: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def recalibration_label(self) -> str:
        """`srm`, or `srm[pooling=avg]` for a variant."""
        module = self.key[2]
        return f"{module}[{self.options}]" if self.options else module

    @property
    def method_label(self) -> str:
        """`erm`, `coral`, or `coral[mmd_gamma=0.5]` for a variant."""
        return f"{self.method}[{self.method_options}]" if self.method_options else self.method

    @property
    def module_label(self) -> str:
        """The row's name as run names give it: `srm[pooling=avg]`, `srm+coral[mmd_gamma=1]`."""
        if self.method == PLAIN_METHOD and not self.method_options:
            return self.recalibration_label
        return f"{self.recalibration_label}+{self.method_label}"

    @property
    def is_plain(self) -> bool:
        """Default options of the module and ERM with its defaults."""
        return not self.options and self.method == PLAIN_METHOD and not self.method_options

    @property
    def label(self) -> str:
        return f"{self.key[1]} {self.module_label}"

    def mean(self, column: str) -> float:
        values = [v for v in self.values.get(column, []) if not math.isnan(v)]
        return statistics.fmean(values) if values else math.nan

    def std(self, column: str) -> float:
        """Sample std over the runs (seeds); NaN with fewer than two."""
        values = [v for v in self.values.get(column, []) if not math.isnan(v)]
        return statistics.stdev(values) if len(values) >= 2 else math.nan


def evaluation_stage(metrics: dict[str, float]) -> str | None:
    """`test` when the run was tested, else `val`; None for runs with no accuracy at all."""
    for stage in (TEST, VAL):
        if any(key.startswith(domain_metric_prefix(stage)) for key in metrics):
            return stage
    return None


def group_runs(runs: list[Run]) -> tuple[list[str], list[Group]]:
    """Domains (sanitised metric names, sorted) and the groups, sorted by their key."""
    groups: dict[tuple, Group] = {}
    domains: set[str] = set()
    for run in runs:
        metrics = run.data.metrics
        stage = evaluation_stage(metrics)
        if stage is None:
            continue
        key = tuple(run.data.tags.get(tag, "?") for tag in GROUP_TAGS)
        tags = run.data.tags
        options = tags.get(OPTIONS_TAG, "")
        method, method_options = (
            tags.get(METHOD_TAG, PLAIN_METHOD),
            tags.get(METHOD_OPTIONS_TAG, ""),
        )
        # Within a module, ERM first, then the other methods by name.
        order = (key, options, method != PLAIN_METHOD, method, method_options)
        group = groups.setdefault(order, Group(key, options, method, method_options))
        group.run_ids.append(run.info.run_id)
        group.stages.add(stage)
        prefix = domain_metric_prefix(stage)
        for name, value in metrics.items():
            if name.startswith(prefix):
                domain = name.removeprefix(prefix)
                domains.add(domain)
                group.values.setdefault(domain, []).append(value)
        for _label, metric in SUMMARY_COLUMNS:
            value = metrics.get(metric_key(stage, metric))
            if value is not None:
                group.values.setdefault(metric, []).append(value)
                seed = run.data.tags.get("seed")
                if seed is not None:
                    group.by_seed.setdefault(metric, {})[seed] = value
        count = run.data.params.get(NUM_PARAMETERS_KEY) or metrics.get(NUM_PARAMETERS_KEY)
        if count is not None:
            group.parameters.add(int(float(count)))
    return sorted(domains), [groups[key] for key in sorted(groups)]


def paired_against_baseline(
    groups: list[Group], baseline: str = "none", method: str = "t", baseline_method: str = "erm"
) -> list[tuple[Group, PairedComparison]]:
    """Each group against the baseline module with the baseline method (default options of
    both) of its protocol and backbone, on `acc_mean`, paired by seed."""
    references = {
        g.key[:2]: g
        for g in groups
        if g.key[2] == baseline
        and not g.options
        and g.method == baseline_method
        and not g.method_options
    }
    pairs = []
    for group in groups:
        reference = references.get(group.key[:2])
        if reference is None or reference is group:
            continue
        comparison = paired_comparison(
            group.module_label,
            group.by_seed.get(ACC_MEAN, {}),
            reference.module_label,
            reference.by_seed.get(ACC_MEAN, {}),
            method,
        )
        pairs.append((group, comparison))
    return pairs


def format_mean_std(values) -> str:
    """`mean ± std` in % over the runs (seeds) of a cell, as the main table shows them."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    spread = f" ± {100 * statistics.stdev(values):.1f}" if len(values) >= 2 else ""
    return f"{100 * statistics.fmean(values):.1f}{spread}"


def module_method_tables(
    groups: list[Group], baseline: str = "none", baseline_method: str = "erm", method: str = "t"
) -> list[tuple[tuple[str, str], tuple, tuple]]:
    """Per protocol and backbone whose runs have more than one method: ((protocol, backbone),
    accuracy table, paired table), `acc_mean` with modules as rows and methods as columns."""
    tables = []
    for setting in dict.fromkeys(g.key[:2] for g in groups):
        mine = [g for g in groups if g.key[:2] == setting]
        if len({g.method_label for g in mine}) < 2:
            continue
        values = {
            (g.recalibration_label, g.method_label): g.by_seed.get(ACC_MEAN, {}) for g in mine
        }
        modules = sorted({g.recalibration_label for g in mine}, key=lambda m: (m != baseline, m))
        methods = sorted({g.method_label for g in mine}, key=lambda m: (m != baseline_method, m))
        accuracy, paired = matrix_tables(
            values, modules, methods, (baseline, baseline_method), method, format_mean_std
        )
        tables.append((setting, accuracy, paired))
    return tables
