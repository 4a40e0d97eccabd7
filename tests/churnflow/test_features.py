"""`churnflow features`: the real dbt project on a real local Spark session, generator data.

One Spark session and one metastore for the module; two small lakes (a few weeks with customer
attributes, and a sparse year without them). Expected values come from a plain pandas
computation of the same features over the silver orders.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churnflow.features import FeaturesError, build_features, run_features
from churnflow.generate import GenerateRequest, generate
from churnflow.lake import CUSTOMER_FEATURES, RAW_CUSTOMERS, RAW_ORDERS, SILVER_ORDERS, Lake
from churnflow.settings import get_settings
from tests.churnflow.contracts import FEATURES_SCHEMA, SILVER_SCHEMA, WINDOWS

CUSTOMERS = 300
HISTORY_START, FIRST_DAY = date(2025, 11, 20), date(2026, 1, 3)
DAYS = [FIRST_DAY + timedelta(n) for n in range(3)]
YEAR_DAY = date(2026, 1, 3)  # sparse lake: the days that leave each window of YEAR_DAY
YEAR_DAYS = sorted({YEAR_DAY - timedelta(n) for n in (0, 1, 7, 8, 30, 31, 90, 91, 365, 366)})
DBT_PROJECT = Path(__file__).resolve().parents[2] / "include" / "dbt"


def write_silver(lake: Path, day: date, orders: pd.DataFrame) -> None:
    """Raw generator orders -> the silver contract (what `churnflow ingest` writes)."""
    table = pa.table(
        {
            "order_id": orders["order_id"].astype(str),
            "customer_id": orders["customer_id"].astype(str),
            "order_ts": pd.to_datetime(orders["order_ts"], utc=True),
            "amount": [Decimal(str(a)) for a in orders["amount"]],
            "items": orders["items"].astype("int32"),
        }
    ).cast(SILVER_SCHEMA)
    folder = Lake(lake).partition_path("silver/orders", day)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "part-00000.parquet")


def make_lake(lake: Path, start: date, end: date, silver_days: list[date]) -> None:
    generate(GenerateRequest(start=start, end=end, customers=CUSTOMERS), lake, progress=False)
    for day in silver_days:
        raw = pd.read_csv(Lake(lake).partition_path(RAW_ORDERS, day) / "part-00000.csv", dtype=str)
        write_silver(lake, day, raw)


def orders_landed_only_on(lake: Path, days: list[date]) -> None:
    """A sparse lake: raw orders of the other days removed, as if none had landed (a landed day
    left out of silver would be a hole the build refuses)."""
    landed = Lake(lake)
    for day in landed.partitions(RAW_ORDERS):
        if day not in days:
            shutil.rmtree(landed.partition_path(RAW_ORDERS, day))


def expected_features(lake: Path, ds: date) -> pd.DataFrame:
    """The features of `ds`, computed the obvious way from every silver order up to `ds`."""
    orders = pd.read_parquet(lake / "silver" / "orders")
    orders["ds"] = pd.to_datetime(orders["ds"].astype(str)).dt.date
    orders = orders[orders["ds"] <= ds].assign(
        amount=lambda o: o["amount"].astype(float),
        age=lambda o: o["ds"].map(lambda d: (ds - d).days),
    )
    per_customer = orders.groupby("customer_id")
    out = pd.DataFrame(
        {
            "first": per_customer["order_ts"].min(),
            "last": per_customer["order_ts"].max(),
            "total": per_customer.size(),
        }
    )
    for n in WINDOWS:
        window = orders[orders["age"] < n].groupby("customer_id")
        out[f"orders_{n}d"] = window.size()
        out[f"amount_{n}d"] = window["amount"].sum()
    out["items_90d"] = orders[orders["age"] < 90].groupby("customer_id")["items"].sum()
    counts = [c for c in out.columns if c.startswith(("orders_", "amount_", "items_"))]
    out[counts] = out[counts].fillna(0)
    out = out[out["orders_90d"] > 0].copy()

    day = pd.Timestamp(ds)
    start = out["first"].dt.tz_convert(None).dt.normalize()
    attributes = customer_attributes(lake, ds)
    if attributes is not None:
        out = out.join(attributes)
        start = pd.concat([start, pd.to_datetime(out["signup_date"])], axis=1).min(axis=1)
    out["tenure_days"] = (day - start).dt.days
    out["days_since_last_order"] = (day - out["last"].dt.tz_convert(None).dt.normalize()).dt.days
    out["avg_order_value_90d"] = out["amount_90d"] / out["orders_90d"]
    span_days = (out["last"] - out["first"]).dt.total_seconds() / 86400
    out["mean_gap_days"] = np.where(out["orders_365d"] >= 2, span_days / (out["total"] - 1), np.nan)
    out["trend_orders_30_90"] = out["orders_30d"] / (out["orders_90d"] / 3)
    out["trend_amount_30_90"] = np.where(
        out["amount_90d"] > 0, out["amount_30d"] / (out["amount_90d"] / 3), np.nan
    )
    return out.drop(columns=["first", "last", "total"]).sort_index()


def customer_attributes(lake: Path, ds: date) -> pd.DataFrame | None:
    """Latest landed attributes per customer up to `ds`; None when raw/customers is absent."""
    root = lake / RAW_CUSTOMERS
    if not root.exists():
        return None
    parts = [p for p in sorted(root.glob("ds=*")) if date.fromisoformat(p.name[3:]) <= ds]
    rows = pd.concat(read_landed(next(p.glob("part-*"))).assign(ds=p.name[3:]) for p in parts)
    latest = rows.sort_values("ds").groupby("customer_id").last()
    return latest[["signup_date", "country", "channel"]]


def read_landed(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def read_features(lake: Path, ds: date) -> pd.DataFrame:
    frame = pd.read_parquet(Lake(lake).partition_path("features/customer_features", ds))
    return frame.sort_values("customer_id", ignore_index=True)


def assert_matches_reference(lake: Path, ds: date) -> None:
    got = read_features(lake, ds).set_index("customer_id").sort_index()
    expected = expected_features(lake, ds)
    assert list(got.index) == list(expected.index)
    numeric = [c for c in expected.columns if c not in ("signup_date", "country", "channel")]
    for column in numeric:
        np.testing.assert_allclose(
            got[column].astype(float), expected[column].astype(float), rtol=1e-9, err_msg=column
        )
    if "country" in expected.columns:
        assert (got["country"] == expected["country"]).all()
        assert (got["channel"] == expected["channel"]).all()
        assert (got["signup_date"].astype(str) == expected["signup_date"].astype(str)).all()


def state_was_chained(state_dir: Path) -> bool:
    """Whether the last build derived customer_state from the previous day's state."""
    compiled = state_dir / "target/compiled/churnflow/models/features/customer_state.sql"
    return "chained from the published state" in compiled.read_text()


def digest(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def project_files() -> set[str]:
    return {str(p.relative_to(DBT_PROJECT)) for p in DBT_PROJECT.rglob("*")}


@dataclass
class Env:
    lake: Path
    year_lake: Path
    state_dir: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One Spark session and metastore under tmp for the module, and the two lakes."""
    from churnflow.spark import get_spark

    root = tmp_path_factory.mktemp("features")
    files_before = project_files()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURNFLOW_SPARK_DIR", str(root / "spark"))
        patch.setenv("CHURNFLOW_DBT_STATE_DIR", str(root / "dbt"))
        patch.delenv("SPARK_REMOTE", raising=False)
        patch.delenv("CHURNFLOW_DBT_TARGET", raising=False)
        get_spark.cache_clear()
        lake, year_lake = root / "lake", root / "year-lake"
        history = (DAYS[-1] + timedelta(1) - HISTORY_START).days + 1
        silver_days = [HISTORY_START + timedelta(n) for n in range(history)]
        make_lake(lake, HISTORY_START, DAYS[-1] + timedelta(2), silver_days=silver_days)
        make_lake(year_lake, YEAR_DAYS[0], YEAR_DAY, silver_days=YEAR_DAYS)
        orders_landed_only_on(year_lake, YEAR_DAYS)
        shutil.rmtree(year_lake / RAW_CUSTOMERS)  # the sparse lake starts without attributes
        yield Env(lake=lake, year_lake=year_lake, state_dir=root / "dbt")
        if get_spark.cache_info().currsize:
            get_spark().stop()
        get_spark.cache_clear()
    assert project_files() == files_before, "dbt wrote into include/dbt"


@pytest.fixture(scope="module")
def three_days(env: Env) -> dict[date, pd.DataFrame]:
    """Features of three consecutive days, built in order (the first over the whole history)."""
    built = {}
    for day in DAYS:
        result = build_features(env.lake, day)
        built[day] = read_features(env.lake, day)
        assert result.rows == len(built[day])
    return built


def test_three_consecutive_days_hold_one_row_per_active_customer(
    env: Env, three_days: dict[date, pd.DataFrame]
) -> None:
    orders = pd.read_parquet(env.lake / "silver" / "orders")
    orders["ds"] = pd.to_datetime(orders["ds"].astype(str)).dt.date
    for day, frame in three_days.items():
        window = orders[(orders["ds"] > day - timedelta(90)) & (orders["ds"] <= day)]
        assert frame["customer_id"].is_unique
        assert set(frame["customer_id"]) == set(window["customer_id"])


def test_features_files_follow_the_contract_schema(
    env: Env, three_days: dict[date, pd.DataFrame]
) -> None:
    for day in three_days:
        folder = Lake(env.lake).partition_path("features/customer_features", day)
        files = [p for p in folder.iterdir() if not p.name.startswith((".", "_"))]
        assert len(files) == 1
        assert pq.read_schema(files[0]).remove_metadata() == FEATURES_SCHEMA


def test_values_match_a_pandas_computation_including_customer_attributes(
    env: Env, three_days: dict[date, pd.DataFrame]
) -> None:
    for day in three_days:
        assert_matches_reference(env.lake, day)
    last = three_days[DAYS[-1]]
    assert last["country"].notna().all() and last["signup_date"].notna().all()
    assert state_was_chained(env.state_dir)  # the last two days came from the day before


def test_rerunning_a_day_gives_identical_rows_and_no_duplicates(
    env: Env, three_days: dict[date, pd.DataFrame]
) -> None:
    summary = run_features_for(env.lake, DAYS[1])
    again = read_features(env.lake, DAYS[1])
    pd.testing.assert_frame_equal(again, three_days[DAYS[1]])
    assert f"{len(again)} active customers" in summary
    assert "slowest nodes (s): " in summary  # where the time went, in the task log


def test_features_of_a_day_do_not_change_when_later_days_are_built(
    env: Env, three_days: dict[date, pd.DataFrame]
) -> None:
    build_features(env.lake, DAYS[0])  # rebuilt after DAYS[1:] landed and were built
    pd.testing.assert_frame_equal(read_features(env.lake, DAYS[0]), three_days[DAYS[0]])


def test_a_day_built_after_a_rebuild_of_an_earlier_day_chains_on_the_same_state(
    env: Env, three_days: dict[date, pd.DataFrame]
) -> None:
    build_features(env.lake, DAYS[1])  # a rerun over unchanged silver: the same rows
    nxt = DAYS[-1] + timedelta(1)
    build_features(env.lake, nxt)
    assert state_was_chained(env.state_dir)
    assert_matches_reference(env.lake, nxt)


def test_every_window_edge_over_a_year_without_customer_attributes(env: Env) -> None:
    build_features(env.year_lake, YEAR_DAY - timedelta(1))
    result = build_features(env.year_lake, YEAR_DAY)
    assert state_was_chained(env.state_dir)  # days leave the 7, 30, 90 and 365-day windows
    assert_matches_reference(env.year_lake, YEAR_DAY)
    frame = read_features(env.year_lake, YEAR_DAY)
    assert result.rows == len(frame) > 0
    assert frame[["country", "channel", "signup_date"]].isna().all().all()
    assert (frame["orders_365d"] > frame["orders_90d"]).any()


def test_customer_attributes_landed_later_as_parquet_are_used(env: Env) -> None:
    request = GenerateRequest(
        start=YEAR_DAYS[0], end=YEAR_DAY, customers=CUSTOMERS, file_format="parquet"
    )
    generate(request, env.year_lake, progress=False)  # same orders, customers now in Parquet
    orders_landed_only_on(env.year_lake, YEAR_DAYS)
    build_features(env.year_lake, YEAR_DAY)
    assert_matches_reference(env.year_lake, YEAR_DAY)
    frame = read_features(env.year_lake, YEAR_DAY)
    assert frame[["country", "channel", "signup_date"]].notna().all().all()


def test_a_failing_dbt_test_publishes_nothing_and_names_the_rule(
    env: Env, three_days: dict[date, pd.DataFrame]
) -> None:
    lake = Lake(env.lake)
    day = DAYS[-1] + timedelta(2)
    raw = pd.read_csv(lake.partition_path(RAW_ORDERS, day) / "part-00000.csv", dtype=str)
    raw.loc[raw.index[:3], "amount"] = "-5.00"
    write_silver(env.lake, day, raw)
    with pytest.raises(FeaturesError) as failure:
        build_features(env.lake, day)
    message = str(failure.value)
    assert "stg_orders" in message and "`amount >= 0` broken by 3 row(s)" in message
    for dataset in ("features/customer_features", "features/customer_state"):
        assert not lake.partition_path(dataset, day).exists()
    assert not [p for p in (env.lake / "features").iterdir() if p.name.startswith(".")]


def test_a_failed_rebuild_leaves_the_published_partitions_byte_identical(
    env: Env, three_days: dict[date, pd.DataFrame]
) -> None:
    lake = Lake(env.lake)
    day = DAYS[-1]
    before = {
        name: digest(lake.partition_path(f"features/{name}", day))
        for name in ("customer_state", "customer_features")
    }
    good = pd.read_parquet(lake.partition_path("silver/orders", day))
    broken = good.copy()
    broken.loc[broken.index[:2], "items"] = 0  # breaks `items >= 1` of stg_orders
    write_silver(env.lake, day, broken.astype({"amount": str, "order_ts": str}))
    try:
        with pytest.raises(FeaturesError, match="items"):
            build_features(env.lake, day)
        for name, files in before.items():
            assert digest(lake.partition_path(f"features/{name}", day)) == files, name
    finally:
        write_silver(env.lake, day, good.astype({"amount": str, "order_ts": str}))


def test_reingesting_an_old_day_is_picked_up_by_the_next_build(
    env: Env, three_days: dict[date, pd.DataFrame]
) -> None:
    lake = Lake(env.lake)
    old = DAYS[0]
    silver = pd.read_parquet(lake.partition_path("silver/orders", old))
    fewer = silver.iloc[: len(silver) // 2].astype({"amount": str, "order_ts": str})
    write_silver(env.lake, old, fewer)  # an operator re-ingested `old` with corrected data
    nxt = DAYS[-1] + timedelta(1)
    summary = run_features_for(env.lake, nxt)
    warning = next(line for line in summary.splitlines() if line.startswith("WARNING"))
    assert old.isoformat() in warning and "were re-ingested (or landed late)" in warning
    assert not state_was_chained(env.state_dir)
    assert_matches_reference(env.lake, nxt)  # as a fresh build over the new silver would be
    for day in (old, *DAYS[1:]):  # rebuilding the range brings every later day up to date
        build_features(env.lake, day)
        assert_matches_reference(env.lake, day)
    write_silver(env.lake, old, silver.astype({"amount": str, "order_ts": str}))


def test_a_missing_silver_day_fails_before_dbt_runs(env: Env) -> None:
    with pytest.raises(FeaturesError, match="run `churnflow ingest --ds 2027-01-01` first"):
        build_features(env.lake, date(2027, 1, 1))


def test_a_landed_day_missing_from_silver_is_refused_and_nothing_is_published(
    env: Env,
) -> None:
    """A day whose raw orders landed but were never ingested is a hole in the history (a
    scheduled day run ahead of the backfill of the days before it), not a day without orders."""
    lake, day, hole = Lake(env.lake), DAYS[-1] + timedelta(1), DAYS[0] - timedelta(10)
    features = lake.partition_path(CUSTOMER_FEATURES, day)
    before = digest(features) if features.is_dir() else None
    silver = lake.partition_path(SILVER_ORDERS, hole)
    aside = env.lake.parent / "silver-aside"
    silver.rename(aside)  # a move keeps the files' times: the chain rule sees the same silver
    try:
        with pytest.raises(FeaturesError) as failure:
            build_features(env.lake, day)
    finally:
        aside.rename(silver)
    message = str(failure.value)
    assert f"raw orders of ds={hole} landed" in message
    assert f"churnflow ingest --ds {hole} --through {day}" in message
    assert (digest(features) if features.is_dir() else None) == before


def run_features_for(lake: Path, day: date) -> str:
    """The CLI entry point, reading the lake from CHURNFLOW_LAKE as the step does."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURNFLOW_LAKE", str(lake))
        get_settings.cache_clear()
        try:
            return run_features(day)
        finally:
            get_settings.cache_clear()
