"""Expected values and bands of a daily statistic (churnflow.bands), on synthetic series."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pytest

from churnflow.bands import MIN_SEASON_DAYS, Band, baseline, weekday_factors

MONDAY = date(2026, 1, 5)
SHOP_WEEK = (0.9, 0.85, 0.9, 0.95, 1.1, 1.3, 1.2)  # the generator's weekday factors
WEEKEND_PEAK = (1.0, 1.0, 1.0, 1.0, 1.0, 2.5, 2.5)


def _series(
    days: int, level: float, week: tuple[float, ...], *, start: date = MONDAY, noise: float = 0.0
) -> dict[date, float]:
    rng = np.random.default_rng(3)
    out = {}
    for n in range(days):
        day = start + timedelta(days=n)
        out[day] = level * week[day.weekday()] * (1 + noise * rng.standard_normal())
    return out


def _warns(value: float, history: dict[date, float], day: date, *, counts: bool = True) -> bool:
    expected = baseline(history, day)
    assert expected is not None
    band = Band.around(expected.expected, (0.5, 2.0), counts=counts)
    return not band.low <= value <= band.high  # type: ignore[operator]


def test_no_history_gives_no_baseline() -> None:
    assert baseline({}, MONDAY) is None
    assert baseline({MONDAY: 5.0}, MONDAY) is None  # only earlier days count


def test_short_history_is_the_median_of_the_latest_seven_days_without_seasonality() -> None:
    history = {MONDAY + timedelta(days=n): float(v) for n, v in enumerate([1, 9, 9, 2, 3, 4, 5, 6])}
    expected = baseline(history, MONDAY + timedelta(days=8))
    assert expected is not None
    assert not expected.seasonal
    assert expected.factor == 1.0
    assert expected.expected == 5.0  # median of 9, 9, 2, 3, 4, 5, 6; the oldest day left out
    assert "no weekday factors from 8 earlier day(s)" in expected.describe()
    assert weekday_factors(history) is None


def test_weekday_factors_come_back_from_four_weeks() -> None:
    factors = weekday_factors(_series(28, 300.0, SHOP_WEEK, noise=0.03))
    assert factors is not None
    assert sum(factors) == pytest.approx(7.0)
    truth = np.array(SHOP_WEEK) / np.mean(SHOP_WEEK)
    assert np.allclose(factors, truth, rtol=0.06)


def test_seasonality_starts_at_two_weeks_of_history() -> None:
    assert weekday_factors(_series(MIN_SEASON_DAYS - 1, 100.0, WEEKEND_PEAK)) is None
    assert weekday_factors(_series(MIN_SEASON_DAYS, 100.0, WEEKEND_PEAK)) is not None


def test_a_normal_weekend_peak_does_not_warn() -> None:
    history = _series(28, 100.0, WEEKEND_PEAK, noise=0.05)
    saturday = MONDAY + timedelta(days=33)
    assert saturday.weekday() == 5
    expected = baseline(history, saturday)
    assert expected is not None and expected.seasonal
    assert expected.expected == pytest.approx(250.0, rel=0.1)
    assert not _warns(250.0, history, saturday)
    # Without the weekday factor the same Saturday is 2.5x the median of its week: it warned.
    latest = sorted(history)[-7:]
    assert 2 * float(np.median([history[d] for d in latest])) < 250.0


def test_a_lasting_level_shift_warns_for_four_days_then_never() -> None:
    history = _series(35, 500.0, SHOP_WEEK, noise=0.04)
    start = MONDAY + timedelta(days=35)
    warned = []
    for n in range(21):  # the campaign ended: 60% fewer orders, for good
        day = start + timedelta(days=n)
        value = 0.4 * 500.0 * SHOP_WEEK[day.weekday()]
        expected = baseline(history, day)
        assert expected is not None
        fail = Band.around(expected.expected, (0.1, 10.0), counts=True)
        assert fail.low <= value <= fail.high  # type: ignore[operator]
        warned.append(_warns(value, history, day))
        history[day] = value
    assert warned[:4] == [True] * 4
    assert not any(warned[4:])


def test_a_level_shift_inside_the_window_does_not_bias_the_weekday_factors() -> None:
    before = _series(28, 500.0, SHOP_WEEK)
    after = _series(28, 200.0, SHOP_WEEK, start=MONDAY + timedelta(days=31))  # mid-week shift
    factors = weekday_factors(before | after)
    assert factors is not None
    assert np.allclose(factors, np.array(SHOP_WEEK) / np.mean(SHOP_WEEK), rtol=0.02)


def test_missing_days_leave_the_baseline_defined() -> None:
    history = _series(42, 100.0, SHOP_WEEK)
    for gap in (3, 10, 11, 30):
        del history[MONDAY + timedelta(days=gap)]
    expected = baseline(history, MONDAY + timedelta(days=42))
    assert expected is not None and expected.seasonal
    assert expected.expected == pytest.approx(100.0 * SHOP_WEEK[0], rel=0.01)


def test_a_day_that_is_always_closed_expects_zero() -> None:
    closed_sundays = (1.0, 1.0, 1.0, 1.0, 1.0, 1.5, 0.0)
    history = _series(28, 60.0, closed_sundays)
    sunday = MONDAY + timedelta(days=34)
    expected = baseline(history, sunday)
    assert expected is not None
    assert expected.expected == 0.0
    assert Band.around(expected.expected, (0.5, 2.0), counts=True) == Band(0, 0)
    monday = baseline(history, sunday + timedelta(days=1))
    assert monday is not None and monday.expected == pytest.approx(60.0)


def test_a_tiny_poisson_feed_does_not_flap() -> None:
    rng = np.random.default_rng(7)
    days = [MONDAY + timedelta(days=n) for n in range(400)]
    counts = dict(zip(days, rng.poisson(12, size=len(days)).astype(float), strict=True))
    warned = sum(
        _warns(counts[day], {d: counts[d] for d in days[n - 56 : n]}, day)
        for n, day in enumerate(days)
        if n >= 56
    )
    ratio_only = sum(
        _warns(counts[day], {d: counts[d] for d in days[n - 56 : n]}, day, counts=False)
        for n, day in enumerate(days)
        if n >= 56
    )
    assert warned <= 3  # of 344 days: under 1%
    assert ratio_only > 5 * max(warned, 1)


def test_count_bands_round_outwards_and_never_below_zero() -> None:
    assert Band.around(100.0, (0.5, 2.0), counts=True) == Band(50, 200)
    assert Band.around(12.0, (0.5, 2.0), counts=True) == Band(1, 24)  # 12 - 3 sqrt 12 = 1.6
    assert Band.around(2.0, (0.5, 2.0), counts=True) == Band(0, math.ceil(2 + 3 * math.sqrt(2)))
    assert Band.around(100.0, (0.1, 10.0), counts=True) == Band(10, 1000)
    assert Band.around(100.0, (None, 2.0), counts=True) == Band(None, 200)


def test_value_bands_are_plain_ratios() -> None:
    assert Band.around(41.3, (0.5, 2.0), counts=False) == Band(20.65, 82.6)
    assert Band.around(41.3, (0.1, None), counts=False) == Band(4.13, None)
