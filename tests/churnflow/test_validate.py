"""The GX gate on real Spark (one classic session for the module) and real Great Expectations.

Silver orders come from the generator, typed to the silver contract with pandas and pyarrow;
customer features are computed from them with pandas to the features contract, so these
tests do not depend on the ingest step or the dbt project.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
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
from churnflow.validate import ValidationError, ValidationSummary, suites_dir, validate
from tests.churnflow.contracts import FEATURES_SCHEMA, SILVER_SCHEMA

DAY = date(2026, 3, 7)  # the day under test; the seven days before it are its history
REQUEST = GenerateRequest(start=DAY - timedelta(days=7), end=DAY, customers=1200, seed=11)
SILVER = "silver/orders"
FEATURES = "features/customer_features"


@pytest.fixture(scope="module", autouse=True)
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One classic local session for the module, with its own Derby folder."""
    from churnflow.spark import get_spark

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURNFLOW_SPARK_DIR", str(tmp_path_factory.mktemp("spark")))
        patch.delenv("SPARK_REMOTE", raising=False)
        get_spark.cache_clear()
        session = get_spark()
        yield session
        session.stop()
        get_spark.cache_clear()


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
    assert summary.docs == lake / "reports/gx/silver_orders/index.html"
    assert "silver_orders" in summary.docs.read_text()
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
    assert summary.parameters["row_count_min"] == 1
    assert summary.parameters["row_count_max"] is None


def test_an_earlier_day_missing_a_column_still_gives_bounds(
    tmp_path: Path, orders: dict[date, pd.DataFrame]
) -> None:
    lake = _silver_lake(tmp_path, orders)
    _write(lake, SILVER, DAY - timedelta(days=1), orders[DAY].drop(columns="amount"), SILVER_SCHEMA)
    summary = validate(lake, DAY, "silver_orders")
    assert len(summary.history) == 7
    assert summary.parameters["amount_mean_min"] > 0


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


def test_row_count_far_below_the_previous_days_fails(
    tmp_path: Path, orders: dict[date, pd.DataFrame]
) -> None:
    broken = dict(orders)
    broken[DAY] = orders[DAY].sample(frac=0.1, random_state=1)
    summary = _failure_of(_silver_lake(tmp_path, broken), "silver_orders")
    line = _failed(summary)[("expect_table_row_count_to_be_between", None)]
    history = [len(orders[day]) for day in summary.history]
    assert f"observed {len(broken[DAY])};" in line
    assert f">= {int(np.median(history) * 0.5)} and <= " in line


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
    lake: Path, orders: dict[date, pd.DataFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    from churnflow.cli import main

    broken = dict(orders)
    broken[DAY] = pd.concat([orders[DAY], orders[DAY].head(1)], ignore_index=True)
    _silver_lake(lake, broken)
    assert main(["validate", "--ds", str(DAY), "--suite", "silver_orders"]) == os.EX_DATAERR
    err = capsys.readouterr().err
    assert "expect_column_values_to_be_unique [order_id]" in err
    assert str(lake / "reports/gx/silver_orders/index.html") in err
    assert main(["validate", "--ds", str(DAY - timedelta(days=1)), "--suite", "silver_orders"]) == 0
    assert "silver_orders ds=2026-03-06: 18 expectations passed" in capsys.readouterr().out
