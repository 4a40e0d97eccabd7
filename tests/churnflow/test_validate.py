"""The GX gate on real Spark (one classic session for the module) and real Great Expectations.

Silver orders come from the generator, typed to the silver contract with pandas and pyarrow;
customer features are computed from them with pandas to the features contract, so these
tests do not depend on the ingest step or the dbt project.
"""

from __future__ import annotations

import json
import os
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churnflow.generate import GenerateRequest, make_population, orders_for_day
from churnflow.lake import Lake
from churnflow.validate import (
    StatsCache,
    ValidationError,
    ValidationSummary,
    suites_dir,
    validate,
)
from tests.churnflow.contracts import FEATURES_SCHEMA, SILVER_SCHEMA

pytestmark = pytest.mark.usefixtures("classic_spark")

DAY = date(2026, 3, 7)  # the day under test; the seven days before it are its history
REQUEST = GenerateRequest(start=DAY - timedelta(days=7), end=DAY, customers=1200, seed=11)
SILVER = "silver/orders"
FEATURES = "features/customer_features"


@pytest.fixture(scope="module")
def orders() -> dict[date, pd.DataFrame]:
    """Generator orders of every day in the silver columns; `_write` types amount as decimal."""
    population = make_population(REQUEST)
    days = {}
    for day in REQUEST.days():
        frame = orders_for_day(REQUEST, population, day)[list(SILVER_SCHEMA.names)]
        frame["order_ts"] = pd.to_datetime(frame["order_ts"], utc=True)
        days[day] = frame
    return days


@pytest.fixture(scope="module")
def features(orders: dict[date, pd.DataFrame]) -> dict[date, pd.DataFrame]:
    population = make_population(REQUEST)
    signup = pd.Series(
        pd.to_datetime([date.fromordinal(int(o)) for o in population.signup]).date,
        index=population.customer_id,
    )
    attributes = pd.DataFrame(
        {"country": population.country, "channel": population.channel, "signup_date": signup},
        index=population.customer_id,
    )
    everything = pd.concat(orders.values(), ignore_index=True)
    return {day: _features(everything, attributes, day) for day in REQUEST.days()}


def _features(orders: pd.DataFrame, attributes: pd.DataFrame, day: date) -> pd.DataFrame:
    """customer_features at `day` from orders up to its end: the contract, in pandas."""
    age = (pd.Timestamp(day, tz="UTC") - orders["order_ts"].dt.floor("D")).dt.days
    past = orders[(age >= 0) & (age < 365)].assign(age=age)
    out = pd.DataFrame(index=past.loc[past["age"] < 90, "customer_id"].unique())
    for n in (7, 30, 90, 365):
        window = past[past["age"] < n].groupby("customer_id")
        out[f"orders_{n}d"] = window.size().reindex(out.index, fill_value=0).astype("int64")
        out[f"amount_{n}d"] = window["amount"].sum().reindex(out.index, fill_value=0.0)
    mine = past[past["customer_id"].isin(out.index)].groupby("customer_id")
    first, last = mine["age"].max(), mine["age"].min()
    signup_age = (pd.Timestamp(day) - pd.to_datetime(attributes["signup_date"])).dt.days
    out["tenure_days"] = np.maximum(first, signup_age.reindex(out.index)).astype("int32")
    out["days_since_last_order"] = last.astype("int32")
    out["items_90d"] = past[past["age"] < 90].groupby("customer_id")["items"].sum().astype("int64")
    out["avg_order_value_90d"] = out["amount_90d"] / out["orders_90d"]
    gaps = (first - last) / (out["orders_365d"] - 1)
    out["mean_gap_days"] = gaps.where(out["orders_365d"] >= 2)
    out["trend_orders_30_90"] = out["orders_30d"] / (out["orders_90d"] / 3)
    out["trend_amount_30_90"] = out["amount_30d"] / (out["amount_90d"] / 3)
    out = out.join(attributes).rename_axis("customer_id").reset_index()
    return out[list(FEATURES_SCHEMA.names)].sort_values("customer_id", ignore_index=True)


def _write(lake: Path, dataset: str, day: date, frame: pd.DataFrame, schema: pa.Schema) -> None:
    schema = pa.schema([f for f in schema if f.name in frame.columns])
    frame = frame.copy()
    for name in frame.columns:
        if pa.types.is_decimal(schema.field(name).type):
            frame[name] = [None if pd.isna(v) else Decimal(f"{v:.2f}") for v in frame[name]]
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    with Lake(lake).publishing(dataset, day) as staging:
        pq.write_table(table, staging / "part-00000.parquet")


def _silver_lake(lake: Path, orders: dict[date, pd.DataFrame], through: date = DAY) -> Path:
    for day, frame in orders.items():
        if day <= through:
            _write(lake, SILVER, day, frame, SILVER_SCHEMA)
    return lake


def _features_lake(lake: Path, features: dict[date, pd.DataFrame]) -> Path:
    for day, frame in features.items():
        _write(lake, FEATURES, day, frame, FEATURES_SCHEMA)
    return lake


def _failure_of(lake: Path, suite: str, day: date = DAY) -> ValidationSummary:
    with pytest.raises(ValidationError) as caught:
        validate(lake, day, suite)
    summary = caught.value.summary
    assert summary is not None
    assert str(summary.docs) in str(caught.value)
    assert summary.docs.is_file()
    return summary


def _failed(summary: ValidationSummary) -> dict[tuple[str, str | None], str]:
    return {(f.expectation, f.column): f.line() for f in summary.failures}


def test_good_silver_day_passes_and_writes_data_docs(
    tmp_path: Path, orders: dict[date, pd.DataFrame]
) -> None:
    lake = _silver_lake(tmp_path, orders)
    suites = sorted(suites_dir().parent.rglob("*"))
    summary = validate(lake, DAY, "silver_orders")
    assert summary.success
    assert sorted(suites_dir().parent.rglob("*")) == suites  # nothing written beside the suites
    assert summary.rows == len(orders[DAY])
    assert summary.history == tuple(DAY - timedelta(days=n) for n in range(7, 0, -1))
    site = lake / "reports/gx/silver_orders"
    assert summary.docs.parent.parent == site / "validations/silver_orders/ds=2026-03-07"
    assert summary.docs.name == "rows-silver_orders.html"  # the day's page, linked from the task
    assert "silver_orders" in summary.docs.read_text()
    assert "ds=2026-03-07" in (site / "index.html").read_text()
    pages = list((lake / "reports/gx/silver_orders/validations").rglob("*.html"))
    assert len(pages) == 2  # the schema batch and the rows batch of DAY
    assert str(summary.docs) in summary.line()
    again = validate(lake, DAY, "silver_orders")
    assert again == summary
    assert sorted((lake / "reports/gx/silver_orders/validations").rglob("*.html")) == sorted(pages)


def test_first_day_without_history_passes_with_relaxed_bounds(
    tmp_path: Path, orders: dict[date, pd.DataFrame]
) -> None:
    first = min(orders)
    lake = _silver_lake(tmp_path, orders, through=first)
    summary = validate(lake, first, "silver_orders")
    assert summary.history == ()
    assert summary.parameters["row_count_fail_min"] == 1  # an empty first day still fails
    assert summary.parameters["row_count_fail_max"] is None
    assert summary.parameters["row_count_warn_min"] is None  # nothing to warn against yet
    assert summary.warnings == ()


def test_an_earlier_day_missing_a_column_still_gives_bounds(
    tmp_path: Path, orders: dict[date, pd.DataFrame]
) -> None:
    lake = _silver_lake(tmp_path, orders)
    _write(lake, SILVER, DAY - timedelta(days=1), orders[DAY].drop(columns="amount"), SILVER_SCHEMA)
    summary = validate(lake, DAY, "silver_orders")
    assert len(summary.history) == 7
    assert summary.parameters["mean_amount_warn_min"] > 0


def test_good_features_day_passes(tmp_path: Path, features: dict[date, pd.DataFrame]) -> None:
    lake = _features_lake(tmp_path, features)
    summary = validate(lake, DAY, "customer_features")
    assert summary.success, summary.message()
    assert summary.rows == len(features[DAY])
    assert "customer_features" in summary.docs.read_text()


def test_duplicate_order_ids_fail(tmp_path: Path, orders: dict[date, pd.DataFrame]) -> None:
    broken = dict(orders)
    day = orders[DAY]
    broken[DAY] = pd.concat([day, day.head(5)], ignore_index=True)
    failed = _failed(_failure_of(_silver_lake(tmp_path, broken), "silver_orders"))
    line = failed[("expect_column_values_to_be_unique", "order_id")]
    assert "10 of" in line  # both copies of each of the 5 ids
    assert list(failed) == [("expect_column_values_to_be_unique", "order_id")]


def test_negative_amounts_fail(tmp_path: Path, orders: dict[date, pd.DataFrame]) -> None:
    broken = dict(orders)
    day = orders[DAY].copy()
    day.loc[:2, "amount"] = -day.loc[:2, "amount"] - 1
    broken[DAY] = day
    failed = _failed(_failure_of(_silver_lake(tmp_path, broken), "silver_orders"))
    line = failed[("expect_column_values_to_be_between", "amount")]
    assert "3 of" in line
    assert "expected >= 0" in line


def test_timestamps_outside_the_day_fail(tmp_path: Path, orders: dict[date, pd.DataFrame]) -> None:
    broken = dict(orders)
    day = orders[DAY].copy()
    day.loc[:3, "order_ts"] += pd.Timedelta(days=1)
    broken[DAY] = day
    failed = _failed(_failure_of(_silver_lake(tmp_path, broken), "silver_orders"))
    line = failed[("expect_column_values_to_be_between", "order_ts")]
    assert "4 of" in line
    assert f">= {DAY}T00:00:00+00:00 and < {DAY + timedelta(days=1)}T00:00:00+00:00" in line


def test_row_count_far_below_the_previous_days_warns_and_the_step_carries_on(
    tmp_path: Path, orders: dict[date, pd.DataFrame]
) -> None:
    changed = dict(orders)
    changed[DAY] = orders[DAY].sample(frac=0.35, random_state=1)  # the campaign ended
    summary = validate(_silver_lake(tmp_path, changed), DAY, "silver_orders")
    assert summary.success
    assert summary.accepted is None
    [warning] = summary.warnings
    expected = float(np.median([len(orders[day]) for day in summary.history]))
    assert warning.line() == (
        f"expect_table_row_count_to_be_between (warn band): observed {len(changed[DAY])}; "
        f"expected >= {int(expected * 0.5)} and <= {int(expected * 2)} (warn band 0.5x-2x, at "
        f"least -/+3 sqrt(expected) for a count of row_count: expected {expected:g} = median "
        "of the 7 latest day(s) (no weekday factors from 7 earlier day(s); they need 14))"
    )
    head, *warnings = summary.line().splitlines()
    assert head.startswith(f"silver_orders ds={DAY}: 20 of 21 expectations passed, 1 warning(s)")
    assert head.endswith(f"Data Docs: {summary.docs}")
    assert warnings == [f"WARNING silver_orders ds={DAY}: {warning.line()}"]
    results = (tmp_path / "reports/gx/silver_orders/results").rglob("*.json")
    assert any(warning.line() in path.read_text() for path in results)


def test_an_order_of_magnitude_drop_fails_naming_the_rule_and_the_band(
    tmp_path: Path, orders: dict[date, pd.DataFrame]
) -> None:
    broken = dict(orders)
    broken[DAY] = orders[DAY].sample(frac=0.05, random_state=1)
    summary = _failure_of(_silver_lake(tmp_path, broken), "silver_orders")
    failure = _failed(summary)[("expect_table_row_count_to_be_between", None)]
    expected = float(np.median([len(orders[day]) for day in summary.history]))
    low = min(expected * 0.1, expected - 3 * np.sqrt(expected))
    assert failure.startswith(
        f"expect_table_row_count_to_be_between (fail band): observed {len(broken[DAY])}; "
        f"expected >= {int(low)} and <= {int(np.ceil(expected * 10))} (fail band 0.1x-10x"
    )
    assert "median of the 7 latest day(s)" in failure
    assert [f.level for f in summary.failures] == ["fail"]
    warned = [(w.expectation, w.level) for w in summary.warnings]
    assert ("expect_table_row_count_to_be_between", "warn") in warned  # passed first
    with pytest.raises(ValidationError, match="CHURNFLOW_ACCEPT_REASON"):
        validate(tmp_path, DAY, "silver_orders")


def test_an_empty_day_fails(tmp_path: Path, orders: dict[date, pd.DataFrame]) -> None:
    lake = _silver_lake(tmp_path, orders)
    with Lake(lake).publishing(SILVER, DAY) as staging:
        pq.write_table(SILVER_SCHEMA.empty_table(), staging / "part-00000.parquet")
    failed = _failed(_failure_of(lake, "silver_orders"))
    line = failed[("expect_table_row_count_to_be_between", None)]
    assert "(fail band): observed 0; expected >= " in line


def test_an_accepted_fail_band_finding_passes_with_the_reason_recorded(
    tmp_path: Path, orders: dict[date, pd.DataFrame]
) -> None:
    broken = dict(orders)
    broken[DAY] = orders[DAY].sample(frac=0.05, random_state=1)
    lake = _silver_lake(tmp_path, broken)
    reason = "shop closed for a stock-take (ticket OPS-12)"
    summary = validate(lake, DAY, "silver_orders", accept=reason)
    assert summary.success
    assert summary.accepted == reason
    assert [w.level for w in summary.warnings].count("fail") == 1
    lines = summary.line().splitlines()
    assert f"fail-band findings accepted: {reason}" in lines[0]
    assert any("(fail band)" in line for line in lines[1:])
    assert sum(line.endswith(f"[accepted: {reason}]") for line in lines) == 1
    record = json.loads((lake / f"reports/gx/silver_orders/accepted/ds={DAY}.json").read_text())
    assert record["reason"] == reason
    assert record["accepted"] == [w.line() for w in summary.warnings if w.level == "fail"]
    results = list((lake / "reports/gx/silver_orders/results").rglob("*.json"))
    assert results and all(
        json.loads(p.read_text())["meta"]["churnflow"]["accepted"] == reason for p in results
    )
    assert all(json.loads(p.read_text())["success"] for p in results)  # published: a pass


def test_seasonal_history_a_weekend_peak_and_a_lasting_level_shift(tmp_path: Path) -> None:
    """Four weeks with a strong weekend, then 60% fewer orders for good: the peak is normal,
    the shift warns on its first days (never fails) and is the new normal after four."""
    week = (100, 100, 100, 100, 100, 250, 250)
    start = date(2026, 2, 2)  # a Monday
    saturday, shift = start + timedelta(days=26), start + timedelta(days=28)
    rng = np.random.default_rng(5)
    for n in range(34):
        day = start + timedelta(days=n)
        count = week[day.weekday()] * (0.4 if day >= shift else 1.0)
        _write(tmp_path, SILVER, day, _synthetic_orders(day, round(count), rng), SILVER_SCHEMA)
    peak = validate(tmp_path, saturday, "silver_orders")
    assert peak.warnings == ()
    # Centred on the Saturday level, not on the week's median (100, where 250 would warn).
    assert 100 < peak.parameters["row_count_warn_min"] <= 125
    warned = {}
    for n in (0, 3, 4, 5):
        summary = validate(tmp_path, shift + timedelta(days=n), "silver_orders")
        warned[n] = [(w.expectation, w.level) for w in summary.warnings]
    row_count = [("expect_table_row_count_to_be_between", "warn")]
    assert warned == {0: row_count, 3: row_count, 4: [], 5: []}

    # A range validated in order with the earlier days' statistics carried along (a load of
    # history) gets the same bands, and the cache holds each earlier partition once.
    known: StatsCache = {}
    for n in range(6):
        day = shift + timedelta(days=n)
        cached = validate(tmp_path, day, "silver_orders", known_stats=known)
        assert cached.parameters == validate(tmp_path, day, "silver_orders").parameters, day
    earlier = [start + timedelta(days=n) for n in range(33)]
    assert {uri for uri, _ in known} == {Lake(tmp_path).partition_uri(SILVER, d) for d in earlier}


def _synthetic_orders(day: date, count: int, rng: np.random.Generator) -> pd.DataFrame:
    """`count` orders of `day` in the silver columns."""
    seconds = rng.integers(0, 86_400, size=count)
    return pd.DataFrame(
        {
            "order_id": [f"{day}-{n}" for n in range(count)],
            "customer_id": [f"C{n:07d}" for n in rng.integers(0, 5_000, size=count)],
            "order_ts": pd.Timestamp(day, tz="UTC") + pd.to_timedelta(seconds, unit="s"),
            "amount": rng.gamma(2.0, 20.0, size=count).round(2),
            "items": rng.integers(1, 4, size=count).astype("int32"),
        }
    )


def test_null_customer_id_fails(tmp_path: Path, features: dict[date, pd.DataFrame]) -> None:
    broken = dict(features)
    day = features[DAY].copy()
    day.loc[:1, "customer_id"] = None
    broken[DAY] = day
    failed = _failed(_failure_of(_features_lake(tmp_path, broken), "customer_features"))
    assert "2 of" in failed[("expect_column_values_to_not_be_null", "customer_id")]


def test_feature_distribution_shift_fails(
    tmp_path: Path, features: dict[date, pd.DataFrame]
) -> None:
    broken = dict(features)
    day = features[DAY].copy()
    money = [c for c in day.columns if c.startswith("amount_")] + ["avg_order_value_90d"]
    day[money] *= 100  # cents where euros were
    broken[DAY] = day
    failed = _failed(_failure_of(_features_lake(tmp_path, broken), "customer_features"))
    assert list(failed) == [("expect_column_median_to_be_between", "amount_90d")]
    assert "expected >= " in failed[("expect_column_median_to_be_between", "amount_90d")]


def test_missing_column_fails_naming_it(tmp_path: Path, orders: dict[date, pd.DataFrame]) -> None:
    broken = dict(orders)
    broken[DAY] = orders[DAY].drop(columns="amount")
    summary = _failure_of(_silver_lake(tmp_path, broken), "silver_orders")
    failed = _failed(summary)
    assert "(missing [amount])" in failed[("expect_table_columns_to_match_set", None)]
    assert ("expect_column_type_to_be", "amount") in failed
    assert summary.failures[0].expectation == "expect_table_columns_to_match_set"


def test_wrong_type_fails_naming_it(tmp_path: Path, features: dict[date, pd.DataFrame]) -> None:
    lake = _features_lake(tmp_path, features)
    schema = pa.schema(
        [
            pa.field("tenure_days", pa.int64()) if f.name == "tenure_days" else f
            for f in FEATURES_SCHEMA
        ]
    )
    _write(lake, FEATURES, DAY, features[DAY], schema)
    line = _failed(_failure_of(lake, "customer_features"))[
        ("expect_column_type_to_be", "tenure_days")
    ]
    assert "observed LongType; expected IntegerType" in line


def test_missing_partition_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"silver/orders/ds=2026-03-07 does not exist"):
        validate(tmp_path, DAY, "silver_orders")


def test_cli_exits_with_data_error_and_the_summary(
    lake: Path,
    orders: dict[date, pd.DataFrame],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from churnflow.cli import main
    from churnflow.settings import get_settings

    broken = dict(orders)
    broken[DAY] = pd.concat([orders[DAY], orders[DAY].head(1)], ignore_index=True)
    _silver_lake(lake, broken)
    monkeypatch.setenv("CHURNFLOW_ACCEPT_REASON", "looks fine to me")
    get_settings.cache_clear()
    assert main(["validate", "--ds", str(DAY), "--suite", "silver_orders"]) == os.EX_DATAERR
    err = capsys.readouterr().err
    assert "expect_column_values_to_be_unique [order_id]" in err
    assert "contract failures (1) are never accepted" in err
    assert f"{lake}/reports/gx/silver_orders/validations/silver_orders/ds={DAY}/" in err
    assert not (lake / "reports/gx/silver_orders/accepted").exists()
    assert main(["validate", "--ds", str(DAY - timedelta(days=1)), "--suite", "silver_orders"]) == 0
    assert "silver_orders ds=2026-03-06: 21 of 21 expectations passed" in capsys.readouterr().out
