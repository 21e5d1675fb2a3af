"""The paired design's statistics: per pretraining seed, λ > 0 minus λ = 0; a t interval over seeds; the verdict.

Why paired: the pretraining seed moves every model's scores (data order, initialisation, augmentations),
often more than λ does. λ = 0 and λ > 0 share each seed, so their difference per seed removes what the
seed does to both, and the interval is over those differences (n = number of pretraining seeds), not over
evaluation seeds (which see one pretrained model each and understate the uncertainty).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .settings import DemoError

__all__ = ["VERDICTS", "Interval", "paired_differences", "t_interval", "t_quantile", "verdict"]

LEVEL = 0.95
VERDICTS = ("shown", "not shown", "reversed")


def t_quantile(p: float, df: int) -> float:
    """The p quantile of Student's t with ``df`` degrees of freedom (scipy.stats.t.ppf)."""
    from scipy.stats import t

    if df < 1:
        raise DemoError(f"a t quantile needs at least 1 degree of freedom, got {df}")
    return float(t.ppf(p, df))


@dataclass(frozen=True)
class Interval:
    """Mean of n values with its two-sided ``level`` t interval; lo/hi are None when n < 2 (no spread)."""

    mean: float
    sd: float | None  # sample standard deviation (n - 1); None when n < 2
    n: int
    lo: float | None
    hi: float | None
    level: float = LEVEL

    @property
    def half_width(self) -> float | None:
        return None if self.lo is None else (self.hi - self.lo) / 2

    def above_zero(self) -> bool:
        return self.lo is not None and self.lo > 0

    def below_zero(self) -> bool:
        return self.hi is not None and self.hi < 0

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "sd": self.sd, "n": self.n, "ci": [self.lo, self.hi], "level": self.level}


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """mean ± t_{(1+level)/2, n-1} · sd / √n over ``values`` (the usual interval for a mean from n draws)."""
    xs = [float(v) for v in values]
    if not xs:
        raise DemoError("an interval needs at least one value")
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return Interval(mean, None, len(xs), None, None, level)
    sd = statistics.stdev(xs)
    half = t_quantile((1 + level) / 2, len(xs) - 1) * sd / math.sqrt(len(xs))
    return Interval(mean, sd, len(xs), mean - half, mean + half, level)


def paired_differences(base: Mapping[int, float], other: Mapping[int, float]) -> list[float]:
    """other[s] − base[s] for every pretraining seed s that both have, in seed order; both must have the same seeds."""
    if set(base) != set(other):
        raise DemoError(
            f"the paired design needs both models at every pretraining seed; λ = 0 has seeds "
            f"{sorted(base)}, the other {sorted(other)}: run the missing pretrainings"
        )
    return [other[s] - base[s] for s in sorted(base)]


def verdict(a_diff: Interval, mix_diff: Interval) -> dict[str, Any]:
    """The paper's BgKnown claim read from the paired intervals: y_diff (a) gains and Mix does not lose.

    shown: the (a) interval lies above 0 and the Mix interval does not lie below 0;
    reversed: the (a) interval lies below 0;
    not shown: anything else (an (a) interval across 0, a Mix interval below 0, or n < 2: no interval)."""
    n = a_diff.n
    if a_diff.lo is None or mix_diff.lo is None:
        word, why = "not shown", "no interval with fewer than 2 pretraining seeds"
    elif a_diff.below_zero():
        word, why = "reversed", "the (a) interval lies below 0"
    elif not a_diff.above_zero():
        word, why = "not shown", "the (a) interval includes 0"
    elif mix_diff.below_zero():
        word, why = "not shown", "(a) gains, but the Mix interval lies below 0 (Mix is lost)"
    else:
        word, why = "shown", "the (a) interval lies above 0 and the Mix interval does not lie below 0"
    return {"verdict": word, "reason": why, "n": n, "a": a_diff.to_dict(), "mix": mix_diff.to_dict()}
