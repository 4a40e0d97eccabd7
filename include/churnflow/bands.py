"""Expected values and bands for a daily statistic, learnt from its recent history.

A daily statistic (orders per day, the mean amount, active customers) moves for two reasons
that a data check must tell apart from broken data: the day of the week, and a change of the
business (a campaign ends and orders fall 60% for good). So the value expected on day D is

    expected = level x factor[weekday(D)]

- `factor` is the weekday's typical share of its week: each earlier day divided by the mean of
  the seven days centred on it (one of each weekday, so the week's own level cancels and a level
  shift elsewhere in the window does not bias the factor), the median of those ratios per
  weekday, scaled so the seven factors average 1. It needs `min_season_days` of history with
  every weekday seen in a full centred week; with less, every factor is 1 (no seasonality).
- `level` is the median of the latest `level_days` de-seasonalised values (value / factor). A
  median re-centres once more than half of those days are at the new level: after a lasting
  shift, within `level_days // 2 + 1` days.

A band is `expected` scaled by two ratios (e.g. 0.5x-2x). For counts it is at least
expected -/+ `z` x sqrt(expected), the spread of a Poisson count, so a feed of a dozen orders a
day does not flap; count bounds are rounded outwards to whole numbers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

LEVEL_DAYS = 7
MIN_SEASON_DAYS = 14
POISSON_Z = 3.0
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class Baseline:
    """The value expected for one day, and what it was computed from."""

    day: date
    level: float
    factor: float
    level_days: int
    history_days: int
    seasonal: bool

    @property
    def expected(self) -> float:
        return self.level * self.factor

    def describe(self) -> str:
        """How `expected` was computed, for messages and Data Docs."""
        level = f"median of the {self.level_days} latest day(s)"
        if not self.seasonal:
            return (
                f"expected {_num(self.expected)} = {level} "
                f"(no weekday factors from {self.history_days} earlier day(s); "
                f"they need {MIN_SEASON_DAYS})"
            )
        return (
            f"expected {_num(self.expected)} = level {_num(self.level)} ({level}, "
            f"de-seasonalised) x {WEEKDAYS[self.day.weekday()]} factor {self.factor:.3g} "
            f"(from {self.history_days} earlier day(s))"
        )


@dataclass(frozen=True)
class Band:
    """Accepted range of a statistic: `low` and `high` may be None (that side open)."""

    low: float | None
    high: float | None

    @classmethod
    def around(
        cls,
        expected: float,
        ratios: tuple[float | None, float | None],
        *,
        counts: bool,
        z: float = POISSON_Z,
    ) -> Band:
        """`ratios` x `expected`; for counts widened to expected -/+ z x sqrt(expected)."""
        low_ratio, high_ratio = ratios
        low = None if low_ratio is None else expected * low_ratio
        high = None if high_ratio is None else expected * high_ratio
        if not counts:
            return cls(
                None if low is None else round(low, 6), None if high is None else round(high, 6)
            )
        spread = z * math.sqrt(max(expected, 0.0))
        if low is not None:
            low = max(0, math.floor(min(low, expected - spread)))
        if high is not None:
            high = math.ceil(max(high, expected + spread))
        return cls(low, high)


def weekday_factors(history: Mapping[date, float]) -> tuple[float, ...] | None:
    """Each weekday's typical ratio to its centred week, averaging 1; None when unknown.

    Only days whose centred week (three days either side) is complete and positive count, so
    a missing day or a week that straddles a level shift weighs one ratio among several. A
    factor is shrunk towards 1 by how much of its spread across weekdays is noise (the
    ratios' robust spread within the weekday): a tiny feed's random weekday pattern is not
    seasonality, a real weekend peak is kept whole.
    """
    if len(history) < MIN_SEASON_DAYS:
        return None
    ratios: list[list[float]] = [[] for _ in WEEKDAYS]
    for day, value in history.items():
        week = [history.get(day + timedelta(days=offset)) for offset in range(-3, 4)]
        if any(v is None for v in week):
            continue
        mean = statistics.fmean(week)  # type: ignore[arg-type]
        if mean > 0:
            ratios[day.weekday()].append(value / mean)
    if not all(ratios):
        return None
    factors = [statistics.median(r) for r in ratios]
    # Variance of each median (1.25 x the robust sd over sqrt n), and of the factors around 1.
    noise = [(1.25 * _robust_sd(r)) ** 2 / len(r) for r in ratios]
    signal = max(0.0, statistics.fmean((f - 1) ** 2 for f in factors) - statistics.fmean(noise))
    shrunk = [
        1 + (f - 1) * (signal / (signal + n) if signal + n > 0 else 0.0)
        for f, n in zip(factors, noise, strict=True)
    ]
    scale = statistics.fmean(shrunk)
    if scale <= 0:
        return None
    return tuple(f / scale for f in shrunk)


def _robust_sd(values: list[float]) -> float:
    """1.4826 x the median absolute deviation: the sd of normal noise, blind to outliers."""
    if len(values) < 2:
        return 0.0
    centre = statistics.median(values)
    return 1.4826 * statistics.median(abs(v - centre) for v in values)


def baseline(history: Mapping[date, float], day: date) -> Baseline | None:
    """What `history` (earlier days -> value) expects on `day`; None without history."""
    earlier = {d: v for d, v in history.items() if d < day}
    if not earlier:
        return None
    factors = weekday_factors(earlier)
    latest = sorted(earlier)[-LEVEL_DAYS:]
    if factors is None:
        level = statistics.median(earlier[d] for d in latest)
        return Baseline(day, level, 1.0, len(latest), len(earlier), seasonal=False)
    # A weekday whose factor is 0 (closed on Sundays) says nothing about the level.
    values = [earlier[d] / factors[d.weekday()] for d in latest if factors[d.weekday()] > 0]
    level = statistics.median(values) if values else 0.0
    return Baseline(day, level, factors[day.weekday()], len(values), len(earlier), seasonal=True)


def _num(value: float) -> str:
    return f"{value:.6g}"
