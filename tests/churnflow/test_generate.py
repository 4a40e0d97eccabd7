from __future__ import annotations

import hashlib
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from churnflow.errors import ConfigError
from churnflow.generate import (
    DRIFT_COHORT_SHARE,
    DRIFT_COUNTRY,
    Defect,
    GenerateRequest,
    generate,
)
from churnflow.lake import RAW_CUSTOMERS, RAW_ORDERS, Lake
from tests.conftest import run_cli

START, END = date(2026, 1, 1), date(2026, 1, 10)
DEFECT_DAY = date(2026, 1, 6)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _orders(lake: Path, day: date) -> pd.DataFrame:
    return pd.read_csv(Lake(lake).partition_path(RAW_ORDERS, day) / "part-00000.csv", dtype=str)


def _generate(lake: Path, **kwargs: object) -> None:
    request = GenerateRequest(start=START, end=END, customers=400, **kwargs)  # type: ignore[arg-type]
    generate(request, lake, progress=False)


def test_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    _generate(tmp_path / "a", seed=3)
    _generate(tmp_path / "b", seed=3)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_other_seed_writes_other_orders(tmp_path: Path) -> None:
    _generate(tmp_path / "a", seed=3)
    _generate(tmp_path / "b", seed=4)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "b")


def test_clean_partitions_follow_the_landing_contract(tmp_path: Path) -> None:
    _generate(tmp_path)
    orders = pd.concat(_orders(tmp_path, day) for day in GenerateRequest(START, END).days())
    assert orders["order_id"].is_unique
    assert orders["customer_id"].notna().all()
    assert (orders["amount"].astype(float) >= 0).all()
    assert (orders["items"].astype(int) >= 1).all()
    for day in (START, END):
        stamps = pd.to_datetime(_orders(tmp_path, day)["order_ts"])
        assert (stamps.dt.date == day).all()
    customers = pd.read_csv(Lake(tmp_path).partition_path(RAW_CUSTOMERS, START) / "part-00000.csv")
    assert list(customers.columns) == ["customer_id", "signup_date", "country", "channel"]


def test_every_day_has_orders_with_weekend_peaks(tmp_path: Path) -> None:
    request = GenerateRequest(start=date(2026, 1, 5), end=date(2026, 2, 1), customers=3000)
    generate(request, tmp_path, progress=False)
    counts = pd.Series({day: len(_orders(tmp_path, day)) for day in request.days()})
    assert (counts > 0).all()
    weekday = counts[[d.weekday() < 4 for d in counts.index]].mean()
    weekend = counts[[d.weekday() >= 5 for d in counts.index]].mean()
    assert weekend > weekday * 1.15


def test_drift_opens_a_new_market_and_raises_prices_from_its_date(tmp_path: Path) -> None:
    _generate(tmp_path / "base")
    _generate(tmp_path / "drift", drift_from=DEFECT_DAY)
    for day in (START, DEFECT_DAY - timedelta(days=1)):
        assert _orders(tmp_path / "drift", day).equals(_orders(tmp_path / "base", day)), day
    base_after = _orders(tmp_path / "base", END)
    drift_after = _orders(tmp_path / "drift", END)
    assert drift_after["amount"].astype(float).mean() > base_after["amount"].astype(float).mean()
    # The cohort: new ids, one new country, signing up from the drift's first day on.
    customers = pd.concat(
        pd.read_csv(Lake(tmp_path / "drift").partition_path(RAW_CUSTOMERS, day) / "part-00000.csv")
        for day in [DEFECT_DAY + timedelta(days=n) for n in range((END - DEFECT_DAY).days + 1)]
    )
    cohort = customers[customers["country"] == DRIFT_COUNTRY]
    assert len(cohort) == 400 * DRIFT_COHORT_SHARE
    assert (pd.to_datetime(cohort["signup_date"]).dt.date >= DEFECT_DAY).all()
    new_buyers = drift_after["customer_id"].isin(cohort["customer_id"]).mean()
    assert new_buyers > 0.25, "the new market orders eagerly from its first days"


def _defect(tmp_path: Path, defect: Defect) -> Path:
    lake = tmp_path / defect.value
    _generate(lake, defect=defect, defect_ds=DEFECT_DAY)
    return lake


def test_defect_nulls_blanks_customer_ids(tmp_path: Path) -> None:
    orders = _orders(_defect(tmp_path, Defect.NULLS), DEFECT_DAY)
    assert orders["customer_id"].isna().mean() > 0.01


def test_defect_negative_amounts(tmp_path: Path) -> None:
    orders = _orders(_defect(tmp_path, Defect.NEGATIVE_AMOUNTS), DEFECT_DAY)
    assert (orders["amount"].astype(float) < 0).mean() > 0.01


def test_defect_duplicate_ids_repeats_ids_within_and_across_days(tmp_path: Path) -> None:
    lake = _defect(tmp_path, Defect.DUPLICATE_IDS)
    orders = _orders(lake, DEFECT_DAY)
    assert orders["order_id"].duplicated().any()
    earlier = set(_orders(lake, date(2026, 1, 5))["order_id"])
    assert earlier & set(orders["order_id"])


def test_defect_non_numeric_amounts(tmp_path: Path) -> None:
    orders = _orders(_defect(tmp_path, Defect.NON_NUMERIC_AMOUNTS), DEFECT_DAY)
    numeric = pd.to_numeric(orders["amount"], errors="coerce")
    assert numeric.isna().mean() > 0.01


def test_defect_renamed_column(tmp_path: Path) -> None:
    orders = _orders(_defect(tmp_path, Defect.RENAMED_COLUMN), DEFECT_DAY)
    assert "amount" not in orders.columns and "order_amount" in orders.columns


def test_defect_empty_file_is_zero_bytes(tmp_path: Path) -> None:
    folder = Lake(_defect(tmp_path, Defect.EMPTY_FILE)).partition_path(RAW_ORDERS, DEFECT_DAY)
    assert [p.stat().st_size for p in folder.iterdir()] == [0]


def test_defect_missing_partition_leaves_no_folder(tmp_path: Path) -> None:
    lake = _defect(tmp_path, Defect.MISSING_PARTITION)
    assert not Lake(lake).partition_path(RAW_ORDERS, DEFECT_DAY).exists()
    assert Lake(lake).partition_path(RAW_ORDERS, START).exists()


def test_defect_wrong_date_timestamps(tmp_path: Path) -> None:
    orders = _orders(_defect(tmp_path, Defect.WRONG_DATE_TIMESTAMPS), DEFECT_DAY)
    days = pd.to_datetime(orders["order_ts"]).dt.date
    assert (days != DEFECT_DAY).mean() > 0.01


def test_only_the_defect_day_is_broken(tmp_path: Path) -> None:
    clean, broken = tmp_path / "clean", _defect(tmp_path, Defect.NEGATIVE_AMOUNTS)
    _generate(clean)
    assert _orders(clean, START).equals(_orders(broken, START))


def test_parquet_format_writes_parquet(tmp_path: Path) -> None:
    _generate(tmp_path, file_format="parquet")
    frame = pd.read_parquet(Lake(tmp_path).partition_path(RAW_ORDERS, START))
    assert {"order_id", "customer_id", "order_ts", "amount", "items"} <= set(frame.columns)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": END, "end": START}, "before --start"),
        ({"defect": Defect.NULLS}, "go together"),
        ({"defect": Defect.NULLS, "defect_ds": date(2027, 1, 1)}, "outside"),
    ],
)
def test_bad_requests_are_config_errors(kwargs: dict, message: str, tmp_path: Path) -> None:
    request = GenerateRequest(**{"start": START, "end": END, **kwargs})
    with pytest.raises(ConfigError, match=message):
        generate(request, tmp_path, progress=False)


def test_cli_generate_reports_counts_and_rejects_unknown_defect(lake: Path) -> None:
    ok = run_cli("generate", "--start", "2026-01-01", "--end", "2026-01-02", "--quiet", lake=lake)
    assert ok.returncode == 0, ok.stderr
    assert "wrote 2 day(s)" in ok.stdout
    bad = run_cli(
        "generate", "--start", "2026-01-01", "--end", "2026-01-02", "--defect", "x", lake=lake
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_a_volume_shift_lowers_daily_orders_from_its_day_on(tmp_path: Path) -> None:
    shift = START + timedelta(days=7)
    request = GenerateRequest(
        start=START, end=shift + timedelta(days=6), customers=2000, volume_from=shift,
        volume_factor=0.4,
    )  # fmt: skip
    generate(request, tmp_path, progress=False)
    same = GenerateRequest(start=START, end=shift + timedelta(days=6), customers=2000)
    generate(same, tmp_path / "base", progress=False)

    def week(lake: Path, first: date) -> int:
        return sum(len(_orders(lake, first + timedelta(n))) for n in range(7))

    assert week(tmp_path, START) == week(tmp_path / "base", START)  # untouched before the shift
    assert 0.3 < week(tmp_path, shift) / week(tmp_path / "base", shift) < 0.5
