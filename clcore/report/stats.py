"""Statistics over seeds for the tables and figures (docs/protocol.md#seed-statistics): the mean, the sample
standard deviation, the standard error and a 95 % confidence interval from Student's t distribution, and the
paired comparison of a method with its base over the seeds both ran (mean difference, its 95 % interval and
the two-sided p-value of the paired t-test). A seed that only one side ran is reported, never dropped quietly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class SeedStats:
    n: int
    mean: float
    std: float   # sample std (ddof 1); NaN with one seed
    sem: float   # std / sqrt(n)
    ci_low: float
    ci_high: float


def seed_stats(values, level: float = LEVEL) -> SeedStats:
    """Mean ± std of the finite `values` and the t interval mean ± t_{(1+level)/2, n-1} · std / sqrt(n)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return SeedStats(0, *(float("nan"),) * 5)
    mean = float(x.mean())
    if n == 1:
        return SeedStats(1, mean, *(float("nan"),) * 4)
    std = float(x.std(ddof=1))
    sem = std / math.sqrt(n)
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * sem
    return SeedStats(n, mean, std, sem, mean - half, mean + half)


@dataclass(frozen=True)
class Paired:
    seeds: tuple[int, ...]             # the seeds both sides ran
    only_method: tuple[int, ...]       # seeds without a base run
    only_base: tuple[int, ...]         # seeds without a method run
    diff: SeedStats                    # of method − base over `seeds`
    p_value: float                     # two-sided paired t-test; NaN below 2 pairs or without spread

    @property
    def excludes_zero(self) -> bool:
        """The 95 % interval of the difference lies on one side of 0 (never with fewer than 2 pairs or no spread)."""
        return self.diff.n >= 2 and self.diff.std > 0 and (self.diff.ci_low > 0 or self.diff.ci_high < 0)


def paired(method: dict[int, float], base: dict[int, float], level: float = LEVEL) -> Paired:
    """`method` and `base` map seed -> value (e.g. final average accuracy); compare them on their shared seeds."""
    ran = lambda values: {s for s, v in values.items() if v is not None and math.isfinite(v)}  # noqa: E731
    with_method, with_base = ran(method), ran(base)  # a seed whose metric is undefined counts as not run
    shared = sorted(with_method & with_base)
    diffs = [method[s] - base[s] for s in shared]
    summary = seed_stats(diffs, level)
    p = float("nan")  # undefined below 2 pairs, and where every pair differs by the same amount (no spread)
    if summary.n >= 2 and summary.std > 0:
        p = float(stats.ttest_rel([method[s] for s in shared], [base[s] for s in shared]).pvalue)
    return Paired(tuple(shared), tuple(sorted(with_method - with_base)), tuple(sorted(with_base - with_method)),
                  summary, p)
