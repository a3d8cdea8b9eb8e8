"""Statistics over trial seeds: mean +- standard error, and paired comparisons against a baseline.

The unit is a trial seed (with its hyperparameter draw and held-out set): two modules run with
the same seed, draw and held-out set share the data split, the draw and the seed-dependent
order of batches, so their difference on that seed is one paired observation. A module
"beats" the baseline when the 95% interval of the mean paired difference excludes 0; `wins`
counts the seeds where its accuracy is higher.

- `t`: mean difference +- t_{0.975, n-1} * sd / sqrt(n) (Student's t on the differences).
- `bootstrap`: the 2.5th and 97.5th percentiles of the mean of n differences resampled with
  replacement (`resamples` times, seeded), for when normality of the differences is doubtful.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class MeanSE:
    mean: float
    se: float
    n: int

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        if math.isnan(self.mean):
            return "-"
        if math.isnan(self.se):
            return f"{scale * self.mean:.{digits}f}"
        return f"{scale * self.mean:.{digits}f} ± {scale * self.se:.{digits}f}"


def mean_se(values: Sequence[float]) -> MeanSE:
    """Mean and standard error of the mean (sample sd / sqrt(n)); NaN values left out; the
    standard error is NaN with fewer than two values."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return MeanSE(math.nan, math.nan, 0)
    mean = statistics.fmean(finite)
    se = statistics.stdev(finite) / math.sqrt(len(finite)) if len(finite) >= 2 else math.nan
    return MeanSE(mean, se, len(finite))


@dataclass(frozen=True)
class PairedComparison:
    """`module` minus `baseline` over the pairs both have."""

    module: str
    baseline: str
    mean_diff: float
    low: float
    high: float
    wins: int
    n: int
    method: str
    confidence: float = 0.95

    def format_interval(self, scale: float = 100.0, digits: int = 1) -> str:
        if math.isnan(self.low):
            return "-"
        return f"[{scale * self.low:+.{digits}f}, {scale * self.high:+.{digits}f}]"


def paired_comparison(
    module: str,
    values: Mapping[object, float],
    baseline: str,
    baseline_values: Mapping[object, float],
    method: str = "t",
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """Paired difference `values - baseline_values` over their common keys (seed, draw,
    held-out set); the interval is NaN with fewer than two pairs."""
    if method not in ("t", "bootstrap"):
        raise ValueError(f"paired comparison method {method!r}: use 't' or 'bootstrap'")
    keys = sorted(
        (
            k
            for k in values
            if k in baseline_values
            and not math.isnan(values[k])
            and not math.isnan(baseline_values[k])
        ),
        key=repr,
    )
    diffs = np.array([values[k] - baseline_values[k] for k in keys], dtype=float)
    n = len(diffs)
    wins = int((diffs > 0).sum())
    if n == 0:
        return PairedComparison(module, baseline, math.nan, math.nan, math.nan, 0, 0, method)
    mean = float(diffs.mean())
    if n < 2:
        return PairedComparison(module, baseline, mean, math.nan, math.nan, wins, n, method)
    alpha = 1 - confidence
    if method == "t":
        half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * float(diffs.std(ddof=1)) / math.sqrt(n)
        low, high = mean - half, mean + half
    else:
        rng = np.random.default_rng(seed)
        means = diffs[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
        low, high = (float(q) for q in np.quantile(means, [alpha / 2, 1 - alpha / 2]))
    return PairedComparison(module, baseline, mean, low, high, wins, n, method, confidence)
